"""Microseconds per hidden-layer block of the kernels a gelu layer with dropout runs in a
step of the compiled epoch: with ``z`` kept (the per-kernel loops: g forward, then g'
and the mask in the δ loop) and with ``g'(z)`` kept (the compiled epoch's loops since
docs/performance.md, "The kept g'(z) of gelu, gelu_tanh and silu").

Run (on an idle machine)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/kept_prime.py [--rounds 3]
"""

import argparse
import time

import numpy as np

from gpubp.kernels import cpu_activations as CA
from gpubp.kernels import cpu_dropout as CD
from gpubp.kernels import dropout as D


def median_us(f, calls=300):
    """The median of ``calls`` timed calls of ``f`` after one untimed, in microseconds."""
    f()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def kernels(P=128, n=512, dtype=np.float32, p=0.2, seed=0):
    """``{name: callable}``: each a pass over one (P, n) block, fresh inputs each call."""
    rng = np.random.default_rng(seed)
    z0 = rng.normal(size=(P, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    z, kept = z0.copy(), np.empty_like(z0)
    delta = rng.normal(size=(P, n)).astype(dtype)
    drop = D.layer_drop(5, 1, p)
    key, threshold, scale = np.uint64(drop.key), np.uint64(drop.threshold), dtype(drop.scale)
    gelu = CA.GELU
    return {
        "copy (subtracted from the forward passes)": lambda: np.copyto(z, z0),
        "forward g, z kept": lambda: (np.copyto(z, z0),
                                      CA.bias_activation(z, b, gelu, 0.01, kept)),
        "forward g and g', g' kept": lambda: (np.copyto(z, z0),
                                              CA.bias_activation_prime(z, b, gelu, 0.01, kept)),
        "mask on a": lambda: CD._drop_forward(z, key, threshold, scale),
        "delta: g'(z) and the mask": lambda: CD._hidden_delta_drop(
            delta, z0, gelu, 0.01, key, threshold, dtype(1), scale),
        "delta: kept g' and the mask": lambda: CD.kept_delta_drop(delta, kept, key, threshold,
                                                                  scale),
        "delta: g'(z), no dropout": lambda: CA.hidden_delta(delta, z0, gelu, 0.01),
        "delta: kept g', no dropout": lambda: CA.kept_delta(delta, kept),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    runs = kernels(dtype=np.dtype(args.dtype).type)
    results = {name: [] for name in runs}
    for _ in range(args.rounds):  # the kernels alternate, round by round
        for name, f in runs.items():
            results[name].append(median_us(f))
    copy = min(results["copy (subtracted from the forward passes)"])
    for name, times in results.items():
        best = min(times) - (copy if name.startswith("forward") else 0.0)
        print(f"{name:45s} {best:8.1f} us")


if __name__ == "__main__":
    main()
