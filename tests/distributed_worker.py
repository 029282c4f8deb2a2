"""One rank of a distributed test: ``mpiexec -n R python distributed_worker.py CASES OUT``.

Runs every case of the JSON file ``CASES`` (see ``distributed_cases.py``) with
``distributed=True`` and writes, from every rank, ``OUT/<name>.rank<r>.npz`` holding the
final parameters and the History, so that the test can check that the ranks agree with
each other and with a single process. A case may resume from a checkpoint written by an
earlier case or launch. A case with ``"expect_error": true`` must fail on every rank:
each rank writes the error it got to ``OUT/<name>.rank<r>.error`` and goes on.
"""

import json
import os
import sys

import numpy as np
from distributed_cases import RecordSum, memory_probe, result_arrays, run

from gpubp.distributed import ranks as distributed

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    from cudasim_support import prepare

    prepare()  # the simulator's shared arrays under a lock (see cudasim_support.py)


def main(cases_path, out):
    with open(cases_path) as f:
        cases = json.load(f)
    rank = distributed.rank()
    for case in cases:
        if "memory_probe" in case:
            memory_probe(*case["memory_probe"], out)
            continue
        if case.get("expect_error"):
            try:
                run(case, distributed=True, rank=rank)
            except Exception as exc:  # noqa: BLE001 - recorded for the test to check
                with open(f"{out}/{case['name']}.rank{rank}.error", "w") as f:
                    f.write(f"{type(exc).__name__}: {exc}")
                W, b = run.net.get_params()  # what the failed fit left
                np.savez(f"{out}/{case['name']}.rank{rank}.after.npz", *W, *b)
            continue
        net, history = run(case, distributed=True, rank=rank)
        np.savez(f"{out}/{case['name']}.rank{rank}.npz", **result_arrays(net, history))
        with open(f"{out}/{case['name']}.rank{rank}.sum", "w") as f:
            f.write(RecordSum.last)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
