"""In-process A/B of the fused optimizer loops: another checkout's
``kernels/cpu_update.py`` against this one's, alternating, best of ``--reps`` calls each.

Run: ``NUMBA_CACHE_DIR=/tmp/nc PYTHONPATH=. python benchmarks/optim_loops_ab.py
OTHER/kernels/cpu_update.py [--reps 200]`` (a cache directory of its own: the other
file's cached loops would name a module this process does not have). Times Adam, AdamW
and RMSprop over the 669,706 parameters of 784-512-512-10, flat (the clipped path) and
AdamW over its six per-layer spans (W¹, b¹, W², b², W³, b³: the compiled epoch's step in
the backward pass), float32 and float64. docs/performance.md, "The Adam step".
"""

import argparse
import importlib.util
import sys
import time

import numpy as np

from gpubp.kernels import cpu_update

SIZES = (784, 512, 512, 10)
ADAM = (1e-3, 0.9, 0.1, 0.999, 0.001, 1e-8, 0.41, 0.005, 0.0)  # lr ... 1 − β2^t, λ


def _load(path):
    spec = importlib.util.spec_from_file_location("other_cpu_update", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Numba's cache looks the module up by name
    spec.loader.exec_module(module)
    return module


def _cases(dtype, rng):
    spans = [n for a, b in zip(SIZES, SIZES[1:]) for n in (a * b, b)]
    n = sum(spans)
    p, g = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    m, v = (np.abs(rng.standard_normal(n)).astype(dtype) for _ in range(2))
    c = np.zeros(n, dtype)
    ends = np.cumsum([0, *spans])
    return {
        "adam": lambda K: K._adam(p, g, m, v, ADAM + (1.0,)),
        "adamw": lambda K: K._adam(p, g, m, v, ADAM + (1 - 1e-5,)),
        "adamw per layer": lambda K: [K._adam(p[a:b], g[a:b], m[a:b], v[a:b], ADAM + (1 - 1e-5,))
                                      for a, b in zip(ends, ends[1:])],
        "rmsprop": lambda K: K._rmsprop(p, g, m, v, c, (1e-3, 0.99, 0.01, 1e-8, 0.0, 0.0),
                                        False),
    }


def main(argv=None):
    """Print each loop's best microseconds, the other file's and this one's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", help="the other checkout's kernels/cpu_update.py")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    sides = {"other": _load(args.other), "this": cpu_update}
    rng = np.random.default_rng(0)
    print("| loop | dtype | other | this | this / other |\n|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        for name, run in _cases(dtype, rng).items():
            best = dict.fromkeys(sides, float("inf"))
            for side in sides.values():
                run(side)  # compiles
            for r in range(args.reps):
                for key in (("other", "this") if r % 2 else ("this", "other")):
                    t0 = time.perf_counter()
                    run(sides[key])
                    best[key] = min(best[key], time.perf_counter() - t0)
            print(f"| {name} | {np.dtype(dtype).name} | {best['other'] * 1e6:.0f} us | "
                  f"{best['this'] * 1e6:.0f} us | {best['this'] / best['other']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
