"""One rank of tests/test_distributed_planted.py: ``mpiexec -n R python THIS CASES OUT``.

Like ``distributed_worker.py`` (the cases of ``distributed_cases.py``), and besides:

- writes ``OUT/<name>.rank<r>.start.npz``: the parameters and the generator state this
  rank's network was built with, before ``fit`` (with ``seed=None`` they are this rank's
  own), so that the test can rebuild rank 0's start in one process;
- ``case["perturb_ranks"]``: the ranks given other parameters before ``fit`` (the
  start-up broadcast must replace them by rank 0's).
"""

import json
import sys

import numpy as np
from distributed_cases import RecordSum, SpreadSGD, make_data, make_group, make_network, \
    result_arrays

from gpubp.distributed import ranks as distributed


def perturbed(W, b):
    """Other parameters of the same shapes (what a rank given other ones would hold)."""
    return [1.5 * w + 0.25 for w in W], [v - 0.5 for v in b]


def run_case(case, out, rank):
    X, y = make_data(case, rank)
    net = make_network(case)
    if rank in case.get("perturb_ranks", ()):
        net.set_params(*perturbed(*net.get_params()))
    W, b = net.get_params()
    state = json.dumps(net.rng.bit_generator.state).encode()
    np.savez(f"{out}/{case['name']}.rank{rank}.start.npz", *W, *b,
             rng=np.frombuffer(state, dtype=np.uint8))
    kwargs = dict(case["fit"])
    if case.get("spread_sgd"):
        kwargs["optimizer"] = SpreadSGD(lr=kwargs.pop("lr"), momentum=0.5)
    group = make_group(case.get("group", {}))
    history = net.fit(X, y, verbose=0, distributed=group, callbacks=[RecordSum(group)],
                      **kwargs)
    np.savez(f"{out}/{case['name']}.rank{rank}.npz", **result_arrays(net, history))
    with open(f"{out}/{case['name']}.rank{rank}.sum", "w") as f:
        f.write(RecordSum.last)


def main(cases_path, out):
    with open(cases_path) as f:
        cases = json.load(f)
    rank = distributed.rank()
    for case in cases:
        run_case(case, out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
