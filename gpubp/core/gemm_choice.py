"""Loop nests or BLAS for each layer's matrix products in the compiled epoch.

For a small layer (the main job's 64-64-10 at 32 rows) a BLAS call's fixed cost is much
of its product's time, and plain loop nests that LLVM vectorises
(:mod:`gpubp.kernels.cpu_small_gemm`) can be faster; for a large one BLAS's blocking wins
by far. Which is faster depends on the machine, so it is measured, once per layer shape
``(n_{l-1}, n_l, P, dtype)`` and process, the first time an epoch needs it: the layer's
three products (forward, ``δ^{l-1}``, ``∂W``) repeated in one compiled call, by loops
and by BLAS alternately, :data:`TRIALS` of each, each after an untimed call, and the
faster best trial wins (interference only adds time, as in the BLAS thread count's
probe, :mod:`gpubp.core.compiled`). It runs under the BLAS thread count of the epoch
that first needs it. A layer of more than :data:`PROBE_UP_TO` multiply-adds per product
is not measured: BLAS. The measurements: docs/performance.md, "Small steps".
"""

import time

import numpy as np

PROBE_UP_TO = 1 << 20  # multiply-adds of one product; above, BLAS without measuring
TRIALS = 5  # timed calls of each candidate
TRIAL_WORK = 1 << 21  # multiply-adds per timed call (its repetitions of the products)
_choices = {}  # (n_in, n_out, P, dtype name) -> (loops: bool, seconds by loops, by BLAS)


def loops(sizes, batch_size, dtype):
    """``Layout.loops`` for a network of ``sizes`` at ``batch_size`` rows: int64 (L,),
    1 where the layer's products run faster as loop nests (measured once, then cached)."""
    out = np.zeros(len(sizes) - 1, dtype=np.int64)
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key = (int(n_in), int(n_out), int(batch_size), np.dtype(dtype).name)
        if key not in _choices:
            _choices[key] = measure(*key)
        out[l] = _choices[key][0]
    return out


def measure(n_in, n_out, P, dtype):
    """``(loops faster, best seconds by loops, best seconds by BLAS)`` of one call of
    the layer's three products repeated to about :data:`TRIAL_WORK` multiply-adds
    (``(False, nan, nan)`` above :data:`PROBE_UP_TO`)."""
    from gpubp.kernels.cpu_small_gemm import repeat_products  # Numba loads with the compiled epoch

    work = P * n_in * n_out
    if work > PROBE_UP_TO or work == 0:
        return False, float("nan"), float("nan")
    rng = np.random.default_rng(0)
    a, delta = (rng.random((P, n)).astype(dtype) for n in (n_in, n_out))
    W = rng.random((n_in, n_out)).astype(dtype)
    z, delta_prev, grad = np.empty((P, n_out), dtype), np.empty((P, n_in), dtype), \
        np.empty((n_in, n_out), dtype)
    reps = max(1, TRIAL_WORK // (3 * work))
    best = {True: float("inf"), False: float("inf")}
    for r in range(TRIALS):
        for candidate in ((True, False) if r % 2 == 0 else (False, True)):
            repeat_products(a, W, z, delta, delta_prev, grad, candidate, 1)  # untimed
            t0 = time.perf_counter()
            repeat_products(a, W, z, delta, delta_prev, grad, candidate, reps)
            best[candidate] = min(best[candidate], (time.perf_counter() - t0) / reps)
    return best[True] < best[False], best[True], best[False]


def choices():
    """What was measured so far: ``{(n_in, n_out, P, dtype): (loops, s_loops, s_blas)}``,
    seconds per repetition of the three products."""
    return dict(_choices)
