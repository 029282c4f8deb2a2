"""Scaling of data-parallel training on one machine: what ``gpubp bench --scaling`` prints.

Three configurations train the same network on the same data with the same global batch,
each in its own processes (so that no BLAS thread pool of one disturbs another):

- 1 rank with 1 BLAS thread (the baseline),
- R ranks with 1 BLAS thread each (``mpiexec -n R``, ``fit(distributed=...)``),
- 1 rank with R BLAS threads (the alternative use of the same cores).

Each worker trains one warm-up epoch (JIT compilation is not throughput), then times
``repeats`` epochs of ``fit`` and reports the best (on a shared machine the best epoch is
the least disturbed one). The distributed worker also reports the share of its epoch spent
posting and waiting for the gradient allreduces (``Group.comm_seconds``). Compare ratios
within one run only.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (784, 1024, 1024, 10)
BATCH = 512


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    from shutil import which

    found = which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec was not found: pip install 'gpubp[mpi]'")
    return found


def worker(sizes, batch_size, steps, repeats, overlap=True):
    """Time ``fit`` epochs in this process (one rank of a launch); returns a dict (root)."""
    import gpubp
    from gpubp import distributed

    comm = distributed.world() if distributed.size() > 1 else None
    group = distributed.Group(comm, overlap=overlap) if comm is not None else False
    rng = np.random.default_rng(0)
    P = batch_size * steps
    X = rng.random((P, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], P)
    net = gpubp.Network(list(sizes), dtype="float32", seed=0)
    kwargs = {"batch_size": batch_size, "lr": 0.01, "verbose": 0, "shuffle": False,
              "distributed": group}
    net.fit(X, y, epochs=1, **kwargs)  # warm-up: compilation, workspaces
    best, best_comm = float("inf"), 0.0
    for _ in range(repeats):
        comm_before = group.comm_seconds() if group else 0.0
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        net.fit(X, y, epochs=1, **kwargs)
        seconds = time.perf_counter() - start
        if comm is not None:  # the slowest rank decides the epoch
            from mpi4py import MPI

            seconds = comm.allreduce(seconds, op=MPI.MAX)
        if seconds < best:
            best = seconds
            best_comm = (group.comm_seconds() - comm_before) if group else 0.0
    return {"samples_per_s": P / best, "seconds": best, "comm_share": best_comm / best,
            "ranks": distributed.size()}


def _launch(ranks, threads, sizes, batch_size, steps, repeats, overlap, timeout):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    spec = json.dumps({"sizes": list(sizes), "batch_size": batch_size, "steps": steps,
                       "repeats": repeats, "overlap": overlap})
    command = [sys.executable, "-m", "gpubp.bench_scaling", spec]
    if ranks > 1:
        command = [_mpiexec(), "-n", str(ranks)] + command
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the {ranks}-rank worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_scaling(ranks=2, sizes=SIZES, batch_size=BATCH, steps=16, repeats=3, overlap=True,
                timeout=600, file=sys.stdout):
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
    overlap : bool
        Per-layer ``Iallreduce`` (True) or one ``Allreduce`` of the flat gradient.
    """
    configs = [("1 rank x 1 thread", 1, 1), (f"{ranks} ranks x 1 thread", ranks, 1),
               (f"1 rank x {ranks} threads", 1, ranks)]
    results = []
    name = "-".join(map(str, sizes))
    print(f"data-parallel scaling: {name}, global batch {batch_size}, float32, "
          f"{steps} steps per epoch, best of {repeats} epochs, "
          f"{'per-layer Iallreduce' if overlap else 'one Allreduce per step'}", file=file)
    print(f"{'configuration':<22} {'samples/s':>10} {'speed-up':>9} {'efficiency':>11} "
          f"{'comm share':>11}", file=file)
    for label, n_ranks, threads in configs:
        result = _launch(n_ranks, threads, sizes, batch_size, steps, repeats, overlap,
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
                    spec.get("overlap", True))
    from gpubp import distributed

    if distributed.is_root():
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
