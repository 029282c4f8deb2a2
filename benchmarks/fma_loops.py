"""Nanoseconds an element of the float32 transcendental loops without and with FMA.

``python benchmarks/fma_loops.py [--rows 128] [--cols 512] [--rounds 9]``: for each of
exp, sigmoid, tanh, gelu, gelu', silu and silu' (float32, a 128 x 512 block: 256 KiB, in
L2), the row loop ``z = f(z + b)`` (``δ ⊙= f(s)`` for the derivatives) over the scalar
function of :mod:`gpubp.kernels.cpu_math`/``cpu_math32`` compiled twice in this process:
without fastmath (the loops as they were) and with ``cpu_math.F32_LOOP`` (FMA
contraction, as they are), next to the kernel that runs in training (``cpu`` /
``cpu_activations`` / ``cpu_dropout`` of the ``gpubp`` imported, so that running it
under another checkout's ``PYTHONPATH`` times that checkout's kernels; ``--kernels-only``
skips the two loops). Each call works on a fresh copy of the block (a value that decays
into the subnormals would time the microcode, not the loop); the copy's own time is
measured alone and taken off. The median over ``--rounds`` rounds, the variants
alternating within a round. Figures: docs/performance.md, "FMA in the float32 loops".
"""

import argparse
import time

import numpy as np
from numba import njit

from gpubp.kernels import cpu, cpu_math
from gpubp.kernels import cpu_activations as A
from gpubp.kernels import cpu_dropout as CD
from gpubp.kernels import cpu_math32 as m32

PLAIN = {"error_model": "numpy"}
_F = np.float32


@njit(inline="always", error_model="numpy")
def _exp(x, slope):
    return cpu_math._exp_f32(x)


@njit(inline="always", error_model="numpy")
def _sigmoid(x, slope):
    return cpu_math._sigmoid_f32(x)


@njit(inline="always", error_model="numpy")
def _tanh(x, slope):
    return cpu_math._tanh_f32(x)


def _kernel(name):
    """The training kernel of ``name`` as ``k(work, s, b)``, or None (exp has none)."""
    return {
        "exp": None,
        "sigmoid": lambda w, s, b: cpu.bias_activation(w, b, "sigmoid"),
        "tanh": lambda w, s, b: cpu.bias_activation(w, b, "tanh"),
        "gelu": lambda w, s, b: cpu.bias_activation(w, b, "gelu"),
        "silu": lambda w, s, b: cpu.bias_activation(w, b, "silu"),
        "gelu'": lambda w, s, b: cpu.hidden_delta(w, s, "gelu"),
        "silu'": lambda w, s, b: cpu.hidden_delta(w, s, "silu"),
        "gelu' dropout": lambda w, s, b: CD._ENTRY.hidden_delta_drop(
            w, s, A.GELU, 0.01, *_NO_MASK),
    }[name]


FUNCTIONS = {"exp": _exp, "sigmoid": _sigmoid, "tanh": _tanh, "gelu": m32._gelu_f32,
             "silu": m32._silu_f32, "gelu'": m32._gelu_prime_f32,
             "silu'": m32._silu_prime_f32, "gelu' dropout": m32._gelu_prime_f32}
_NO_MASK = np.uint64(0), np.uint64(0), _F(1.0), _F(1.0)  # threshold 0: every entry kept


def _loop(f, options, derivative, dropout):
    """``z = f(z + b)``, or ``δ ⊙= f(s)`` (through the dropout loop with every entry kept),
    over rows, compiled with ``options``."""
    if dropout:  # the mask's values as arguments: constants would fold the hash away
        @njit(**options)
        def masked(d, s, key, threshold, unscale, scale):
            CD._drop_delta_rows(d, s, f, 0.01, key, threshold, unscale, scale)

        def rows(d, s, b):
            masked(d, s, *_NO_MASK)
    elif derivative:
        @njit(**options)
        def rows(d, s, b):
            P, n = d.shape
            for p in range(P):
                drow, srow = d[p], s[p]
                for j in range(n):
                    drow[j] *= f(srow[j], _F(0.0))
    else:
        @njit(**options)
        def rows(z, s, b):
            P, n = z.shape
            for p in range(P):
                row = z[p]
                for j in range(n):
                    row[j] = f(row[j] + b[j], _F(0.0))
    return rows


def _time(call, start, work, calls):
    """Seconds of ``calls`` calls of ``call(work)``, each after a copy of ``start``."""
    t0 = time.perf_counter()
    for _ in range(calls):
        np.copyto(work, start)
        call(work)
    return time.perf_counter() - t0


def measure(rows, cols, rounds, calls, kernels_only):
    """``{name: {variant: ns per element}}``, medians over ``rounds``."""
    rng = np.random.default_rng(0)
    z = (2 * rng.normal(size=(rows, cols))).astype(np.float32)
    s = (2 * rng.normal(size=(rows, cols))).astype(np.float32)
    delta = rng.normal(size=(rows, cols)).astype(np.float32)
    b = (0.1 * rng.normal(size=cols)).astype(np.float32)
    work = np.empty_like(z)
    result = {}
    for name, f in FUNCTIONS.items():
        dropout = "dropout" in name
        derivative = name.endswith("'") or dropout
        start = delta if derivative else z
        variants = {}
        if f is not None and not kernels_only:
            variants["plain"] = _loop(f, PLAIN, derivative, dropout)
            variants["contract"] = _loop(f, cpu_math.F32_LOOP, derivative, dropout)
        if _kernel(name) is not None:
            variants["kernel"] = _kernel(name)
        calls_of = {v: (lambda w, fn=fn: fn(w, s, b)) for v, fn in variants.items()}
        calls_of["copy"] = lambda w: None
        for call in calls_of.values():  # compile, warm the caches
            _time(call, start, work, 2)
        times = {v: [] for v in calls_of}
        for _ in range(rounds):
            for v, call in calls_of.items():
                times[v].append(_time(call, start, work, calls))
        copy = np.median(times.pop("copy"))
        result[name] = {v: (np.median(t) - copy) / calls / z.size * 1e9
                        for v, t in times.items()}
        print(name, {v: round(ns, 3) for v, ns in result[name].items()}, flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--cols", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--kernels-only", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.rows, args.cols, args.rounds, args.calls, args.kernels_only)
    columns = ("kernel",) if args.kernels_only else ("plain", "contract", "kernel")
    print("| loop | " + " | ".join(columns) + " |")
    for name, row in result.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.2f}" if c in row else "-"
                                          for c in columns) + " |")


if __name__ == "__main__":
    main()
