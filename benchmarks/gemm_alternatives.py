"""Other ways to run a training step's matrix products on the CPU, against the one fit uses.

``python benchmarks/gemm_alternatives.py [--case 784-256-256-10@128 ...] [--dtype float32]
[--rounds 3] [--mkl PATH/libmkl_rt.so.N]`` times, per case, the six products of a step of
the compiled epoch (``z^l = a^{l-1} W^l``, ``∂W^l = a^{l-1 T} δ^l``, ``δ^{l-1} = δ^l W^{l T}``)
in four ways, each in fresh processes of its own, in rounds, best of each:

- ``openblas-all``: ``np.dot`` inside ``@njit`` (SciPy's OpenBLAS) on all BLAS threads, what
  the compiled epoch does on a large step;
- ``openblas-1``: the same on one BLAS thread;
- ``split-2``: each product cut in two (the rows of ``z``, the rows of ``∂W`` and the
  columns of ``δ^{l-1}``), the halves run on two Numba threads (``prange``), each half by
  a one-thread OpenBLAS call: a step's parallelism taken from the BLAS into the epoch;
- ``mkl-all``: Intel MKL's ``cblas_?gemm`` on all threads (only with ``--mkl``; the
  ``mkl`` wheel from PyPI has ``lib/libmkl_rt.so.*``, not a dependency of gpubp).

It prints µs per step and each way's ratio to ``openblas-all``. Unset ``OPENBLAS_CORETYPE``
and ``OPENBLAS_L2_SIZE`` for the command (docs/performance.md). Figures and what they
decided: docs/performance.md, "Other GEMMs".
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from numba import njit, prange, types
from numba.typed import List

from feature_costs import parse_case  # a script beside this one: the same case syntax

WAYS = ("openblas-all", "openblas-1", "split-2", "mkl-all")


def operands(sizes, P, dtype, seed=0):
    """Weights, activations, deltas and gradient buffers of one step (random values)."""
    rng = np.random.default_rng(seed)
    W = [(rng.standard_normal((m, n)) / np.sqrt(m)).astype(dtype)
         for m, n in zip(sizes[:-1], sizes[1:])]
    acts = [rng.standard_normal((P, n)).astype(dtype) for n in sizes]
    deltas = [rng.standard_normal((P, n)).astype(dtype) for n in sizes]
    grads = [np.empty_like(w) for w in W]
    return W, acts, deltas, grads


# Numba's BLAS bridge (the ?gemm np.dot compiles to; column-major, C = alpha op(A) op(B) + beta C)
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enum values


def _cblas(name):
    """MKL's ``cblas_?gemm`` (row-major), linked by name once its library is loaded."""
    scalar = types.float32 if name == "cblas_sgemm" else types.float64
    return types.ExternalFunction(name, types.void(
        types.intc, types.intc, types.intc, types.intc, types.intc, types.intc, scalar,
        types.voidptr, types.intc, types.voidptr, types.intc, scalar, types.voidptr, types.intc))


_sgemm, _dgemm = _cblas("cblas_sgemm"), _cblas("cblas_dgemm")


@njit
def _rows_product(a, W, z, p0, p1, one_zero):
    """``z[p0:p1] = a[p0:p1] W`` (row-major; BLAS sees the column-major transposes)."""
    n_in, n_out = a.shape[1], W.shape[1]
    kind = ord("s") if W.itemsize == 4 else ord("d")
    if p1 > p0:
        _xxgemm(kind, ord("N"), ord("N"), n_out, p1 - p0, n_in, one_zero[0:].ctypes, W.ctypes,
                n_out, a[p0:].ctypes, n_in, one_zero[1:].ctypes, z[p0:].ctypes, n_out)


@njit
def _gradient_rows(a, delta, G, i0, i1, one_zero):
    """``G[i0:i1] = a[:, i0:i1]ᵀ δ``: rows of ``∂W``."""
    P, n_in = a.shape
    n_out = delta.shape[1]
    kind = ord("s") if G.itemsize == 4 else ord("d")
    _xxgemm(kind, ord("N"), ord("T"), n_out, i1 - i0, P, one_zero[0:].ctypes, delta.ctypes,
            n_out, a[0, i0:].ctypes, n_in, one_zero[1:].ctypes, G[i0:].ctypes, n_out)


@njit
def _delta_columns(delta, W, out, i0, i1, one_zero):
    """``out[:, i0:i1] = δ W[i0:i1]ᵀ``: columns of ``δ^{l-1}``."""
    P, n_out = delta.shape
    n_in = W.shape[0]
    kind = ord("s") if W.itemsize == 4 else ord("d")
    _xxgemm(kind, ord("T"), ord("N"), i1 - i0, P, n_out, one_zero[0:].ctypes, W[i0:].ctypes,
            n_out, delta.ctypes, n_out, one_zero[1:].ctypes, out[0, i0:].ctypes, n_in)


@njit(parallel=True)
def _split_forward(a, W, z, one_zero):
    P = a.shape[0]
    for t in prange(2):
        _rows_product(a, W, z, t * (P // 2), P // 2 if t == 0 else P, one_zero)


@njit(parallel=True)
def _split_backward(a, delta, W, G, delta_prev, one_zero, first):
    n_in = a.shape[1]
    half = n_in // 2 // 8 * 8  # whole cache lines of float32 per thread
    for t in prange(2):
        i0, i1 = (0, half) if t == 0 else (half, n_in)
        _gradient_rows(a, delta, G, i0, i1, one_zero)
        if not first:
            _delta_columns(delta, W, delta_prev, i0, i1, one_zero)


@njit
def _mkl_product(a, b, c, trans_a, trans_b):
    """``c = op(a) op(b)`` by MKL (row-major; ``op`` the transpose where asked)."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    ta, tb = (_TRANS if trans_a else _NO_TRANS), (_TRANS if trans_b else _NO_TRANS)
    if c.itemsize == 4:
        _sgemm(_ROW_MAJOR, ta, tb, m, n, k, np.float32(1), a.ctypes, a.shape[1], b.ctypes,
               b.shape[1], np.float32(0), c.ctypes, n)
    else:
        _dgemm(_ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes, a.shape[1], b.ctypes,
               b.shape[1], 0.0, c.ctypes, n)


def _steps(way):
    """A compiled ``run(W, acts, deltas, grads, reps)`` (typed lists of the layers'
    arrays) doing ``reps`` times the step's products ``way`` (0, 2 or 3: BLAS, split,
    MKL; the thread count is the caller's)."""
    @njit
    def run(W, acts, deltas, grads, reps):
        L = len(W)
        one_zero = np.array([1.0, 0.0], dtype=W[0].dtype)
        for _ in range(reps):
            for l in range(L):
                if way == 2:
                    _split_forward(acts[l], W[l], acts[l + 1], one_zero)
                elif way == 3:
                    _mkl_product(acts[l], W[l], acts[l + 1], False, False)
                else:
                    np.dot(acts[l], W[l], acts[l + 1])
            for l in range(L - 1, -1, -1):
                if way == 2:
                    _split_backward(acts[l], deltas[l + 1], W[l], grads[l], deltas[l],
                                    one_zero, l == 0)
                elif way == 3:
                    _mkl_product(acts[l], deltas[l + 1], grads[l], True, False)
                    if l > 0:
                        _mkl_product(deltas[l + 1], W[l], deltas[l], False, True)
                else:
                    np.dot(acts[l].T, deltas[l + 1], grads[l])
                    if l > 0:
                        np.dot(deltas[l + 1], W[l].T, deltas[l])

    return run


def _kernels(mkl_path):
    """The step's products each way; MKL's library loaded first (Numba links
    ``cblas_?gemm`` by name from it when ``mkl-all`` compiles)."""
    if mkl_path:
        import llvmlite.binding  # only the mkl-all worker loads MKL

        llvmlite.binding.load_library_permanently(mkl_path)
    return {way: _steps(i if way != "openblas-1" else 0) for i, way in enumerate(WAYS)}


def step_seconds(way, sizes, P, dtype, reps, mkl_path=None):
    """Best seconds of the step's products done ``way``, and the outputs (for checks)."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn, installed

    kernels = _kernels(mkl_path if way == "mkl-all" else None)
    W, acts, deltas, grads = (List(x) for x in operands(sizes, P, dtype))
    run = kernels[way]
    if way == "mkl-all":
        import ctypes  # MKL's own thread count: all cores, as OpenBLAS's default

        ctypes.CDLL(mkl_path).MKL_Set_Num_Threads(len(__import__("os").sched_getaffinity(0)))
    limit = threadpool_limits(1) if way in ("openblas-1", "split-2") else None
    try:
        run(W, acts, deltas, grads, 1)  # compiles, and wakes the threads
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            run(W, acts, deltas, grads, reps)
            best = min(best, (time.perf_counter() - t0) / reps)
    finally:
        if limit is not None:
            limit.unregister()
    return best, acts, deltas, grads


def measure(cases, dtype, rounds, mkl_path):
    """``{case: {way: best µs per step}}``, every way in its own fresh processes."""
    ways = [w for w in WAYS if w != "mkl-all" or mkl_path]
    best = {case: dict.fromkeys(ways, float("inf")) for case in cases}
    for _ in range(rounds):
        for case in cases:
            for way in ways:
                cmd = [sys.executable, __file__, "--worker", way, "--case", case, "--dtype", dtype]
                if mkl_path:
                    cmd += ["--mkl", mkl_path]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                us = json.loads(out.stdout.splitlines()[-1])["us"]
                best[case][way] = min(best[case][way], us)
    return best


def table(best):
    """Markdown rows: case, µs per step each way, and each way's ratio to openblas-all."""
    ways = list(next(iter(best.values())))
    rows = ["| case | " + " | ".join(ways) + " | " + " | ".join(
        f"openblas-all / {w}" for w in ways[1:]) + " |", "|---" * (2 * len(ways)) + "|"]
    for case, us in best.items():
        base = us["openblas-all"]
        rows.append(f"| {case} | " + " | ".join(f"{us[w]:.0f}" for w in ways) + " | "
                    + " | ".join(f"{base / us[w]:.2f}" for w in ways[1:]) + " |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mkl", help="path of MKL's libmkl_rt.so (times mkl-all too)")
    parser.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cases = args.case or ["784-256-256-10@128", "784-512-512-10@128", "784-1024-1024-10@256",
                          "784-512-10@512", "64-64-10@32"]
    if args.worker:
        sizes, P = parse_case(cases[0])
        flops = 6 * P * sum(m * n for m, n in zip(sizes[:-1], sizes[1:]))
        seconds = step_seconds(args.worker, sizes, P, args.dtype,
                               max(10, int(4e9 / flops)), args.mkl)[0]
        print(json.dumps({"us": seconds * 1e6}))
        return
    for case in cases:
        parse_case(case)
    print(f"{args.dtype}, µs per step of the six products, best of 5 x {args.rounds} processes")
    print(table(measure(cases, args.dtype, args.rounds, args.mkl)))


if __name__ == "__main__":
    main()
