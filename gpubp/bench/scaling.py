"""Scaling of data-parallel training on one machine: what ``gpubp bench --scaling`` prints.

Three configurations train the same network on the same data with the same global batch,
each in its own processes (so that no BLAS thread pool of one disturbs another):

- 1 rank with 1 BLAS thread (the baseline),
- R ranks with 1 BLAS thread each (``mpiexec -n R``, ``fit(distributed=...)``),
- 1 rank with R BLAS threads (the alternative use of the same cores).

Each worker runs one ``fit`` of ``repeats + 1`` epochs, timing every epoch from inside
(a callback at its beginning and end, as ``gpubp bench`` times ``fit``): the first is the
warm-up (JIT compilation, the shared-memory windows), the best of the others is reported
(on a shared machine the best epoch is the least disturbed one), the slowest rank's time
deciding each epoch. ``fit``'s set-up, once per run, is not an epoch. The distributed
worker also reports the share of its epoch spent summing gradients (``Group.comm_seconds``:
posting and waiting for the allreduces, or the barriers and slice sums of the
shared-memory sum). Compare ratios within one run only.

Reductions (``reduction``, the names of :mod:`gpubp.distributed.reductions` for host
arrays): ``"shared"`` (the default: the ranks of the machine share one copy of the
parameters and split each batch's rows and each weight matrix's rows, the split step of
:mod:`gpubp.distributed.split_step`), ``"slice-sums"`` (shared parameters, full gradients
summed in shared memory slice by slice), ``"iallreduce"`` (one non-blocking allreduce per
layer) and ``"allreduce"`` (one allreduce of the flat gradient per step).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gpubp.distributed.reductions import HOST_REDUCTIONS
from gpubp.distributed.reductions import REDUCTIONS as TITLES
from shutil import which

SIZES = (784, 1024, 1024, 10)
BATCH = 512


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)

    found = which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec was not found: pip install 'gpubp[mpi]'")
    return found


REDUCTIONS = HOST_REDUCTIONS  # the benchmark's network is on the CPU


def worker(sizes, batch_size, steps, repeats, reduction="shared"):
    """Time the epochs of one ``fit`` in this process (one rank of a launch); returns a dict
    (on the root)."""
    import gpubp  # in the rank processes only: the launcher stays light
    from gpubp.distributed import ranks as distributed
    from gpubp.training.callbacks import Callback  # as above

    comm = distributed.world() if distributed.size() > 1 else None
    group = distributed.Group(comm, reduction=reduction) if comm is not None else False

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds, self.comm = [], []

        def on_epoch_begin(self, run, epoch):
            self.comm_before = group.comm_seconds() if group else 0.0
            self.start = time.perf_counter()

        def on_epoch_end(self, run, epoch, logs):
            self.seconds.append(time.perf_counter() - self.start)
            self.comm.append((group.comm_seconds() - self.comm_before) if group else 0.0)

    rng = np.random.default_rng(0)
    P = batch_size * steps
    X = rng.random((P, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], P)
    net = gpubp.Network(list(sizes), dtype="float32", seed=0)
    timer = EpochTimer()
    net.fit(X, y, epochs=repeats + 1, batch_size=batch_size, lr=0.01, verbose=0,
            shuffle=False, distributed=group, callbacks=[timer])
    seconds = np.array(timer.seconds[1:])  # the first epoch is the warm-up
    if comm is not None:  # the slowest rank decides each epoch
        from mpi4py import MPI

        comm.Allreduce(MPI.IN_PLACE, seconds, op=MPI.MAX)
    best = int(np.argmin(seconds))
    return {"samples_per_s": P / seconds[best], "seconds": float(seconds[best]),
            "comm_share": timer.comm[1:][best] / seconds[best], "ranks": distributed.size()}


def _launch(ranks, threads, sizes, batch_size, steps, repeats, reduction, timeout):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    spec = json.dumps({"sizes": list(sizes), "batch_size": batch_size, "steps": steps,
                       "repeats": repeats, "reduction": reduction})
    command = [sys.executable, "-m", "gpubp.bench.scaling", spec]
    if ranks > 1:
        command = [_mpiexec(), "-n", str(ranks)] + command
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the {ranks}-rank worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_scaling(ranks=2, sizes=SIZES, batch_size=BATCH, steps=16, repeats=5,
                reduction="shared", timeout=600, file=sys.stdout):
    """Run the three configurations and print the table; returns their results (dicts).

    Parameters
    ----------
    ranks : int
        R: ranks of the distributed run, and BLAS threads of the threaded one.
    sizes : tuple of int
    batch_size : int
        The global batch.
    steps : int
        Steps per timed epoch.
    repeats : int
        Timed epochs per configuration (the best is kept).
    reduction : str
        One of :data:`REDUCTIONS` (see the module docstring).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    configs = [("1 rank x 1 thread", 1, 1), (f"{ranks} ranks x 1 thread", ranks, 1),
               (f"1 rank x {ranks} threads", 1, ranks)]
    results = []
    name = "-".join(map(str, sizes))
    print(f"data-parallel scaling: {name}, global batch {batch_size}, float32, "
          f"{steps} steps per epoch, best of {repeats} epochs, {TITLES[reduction]}",
          file=file)
    print(f"{'configuration':<22} {'samples/s':>10} {'speed-up':>9} {'efficiency':>11} "
          f"{'comm share':>11}", file=file)
    for label, n_ranks, threads in configs:
        result = _launch(n_ranks, threads, sizes, batch_size, steps, repeats, reduction,
                         timeout)
        result["configuration"] = label
        results.append(result)
        speedup = result["samples_per_s"] / results[0]["samples_per_s"]
        workers = max(n_ranks, threads)
        result["speedup"], result["efficiency"] = speedup, speedup / workers
        comm = f"{result['comm_share']:.1%}" if n_ranks > 1 else "-"
        print(f"{label:<22} {result['samples_per_s']:>10.0f} {speedup:>8.2f}x "
              f"{speedup / workers:>10.0%} {comm:>11}", file=file)
    return results


def _main(argv):
    spec = json.loads(argv[0])
    result = worker(spec["sizes"], spec["batch_size"], spec["steps"], spec["repeats"],
                    spec.get("reduction", "shared"))
    from gpubp.distributed import ranks as distributed  # as above: mpi4py starts MPI

    if distributed.is_root():
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
