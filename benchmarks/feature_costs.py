"""What each training feature of a modern MLP costs over plain SGD with sigmoid units.

``python benchmarks/feature_costs.py [--case 784-512-512-10@128] [--processes 3]
[--epochs 4]`` times :meth:`gpubp.Network.fit` (the user's call, shuffled batches, the
compiled epoch on the ``cpu`` backend) for one network with one feature switched on at a
time, then all of them together (issue 19's case: gelu, dropout 0.2, AdamW, gradient
clipping, warm-up + cosine per step). Every variant runs in fresh processes of its own,
one after another in rounds, and reports its best epoch; the table gives ms per epoch and
the ratio to the plain variant measured in the same run. Unset ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` for the command (see docs/performance.md). Figures: docs/performance.md.
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np

# variant -> (Network keywords, fit keywords); "plain" is the baseline of every ratio
VARIANTS = {
    "plain (sigmoid, sgd)": ({}, {}),
    "gelu": ({"hidden": "gelu"}, {}),
    "relu": ({"hidden": "relu"}, {}),
    "dropout 0.2": ({"dropout": 0.2}, {}),
    "clip_norm 1.0": ({}, {"clip_norm": 1.0}),
    "adamw": ({}, {"optimizer": "adamw", "lr": 1e-3}),
    "warmup_cosine": ({}, {"schedule": "warmup_cosine"}),
    "all (issue 19)": ({"hidden": "gelu", "dropout": 0.2},
                       {"optimizer": "adamw", "lr": 1e-3, "clip_norm": 1.0,
                        "schedule": "warmup_cosine"}),
}


def time_variant(name, sizes, batch_size, epochs, samples=4096, seed=0):
    """Best seconds per epoch of ``fit`` for the variant ``name``, in this process."""
    import gpubp  # imported here: the parent process only starts the workers

    net_kw, fit_kw = VARIANTS[name]
    rng = np.random.default_rng(seed)
    X = rng.random((samples, sizes[0]), dtype=np.float64).astype(np.float32)
    y = rng.integers(0, sizes[-1], samples)
    net = gpubp.Network(list(sizes), output="softmax", loss="cross_entropy",
                        dtype="float32", backend="cpu", seed=seed, **net_kw)
    fit_kw = {"lr": 0.05, **fit_kw}
    net.fit(X, y, epochs=1, batch_size=batch_size, verbose=0, **fit_kw)  # compiles
    best = float("inf")
    for _ in range(epochs):
        t0 = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=batch_size, verbose=0, **fit_kw)
        best = min(best, time.perf_counter() - t0)
    return best


def parse_case(text):
    """``"784-512-512-10@128"`` -> ``((784, 512, 512, 10), 128)``."""
    try:
        shape, batch = text.split("@")
        return tuple(int(s) for s in shape.split("-")), int(batch)
    except ValueError:
        raise ValueError(f"case must look like '784-512-512-10@128', got {text!r}") from None


def measure(case, processes, epochs, variants=tuple(VARIANTS)):
    """``{variant: best seconds per epoch}``, each variant's processes in rounds."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(processes):
        for name in variants:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", name, "--case", case,
                 "--epochs", str(epochs)], capture_output=True, text=True, check=True)
            best[name] = min(best[name], json.loads(out.stdout.splitlines()[-1])["seconds"])
    return best


def table(best):
    """Markdown rows: variant, ms per epoch, ratio to the plain variant."""
    base = best[next(iter(best))]
    rows = ["| variant | ms/epoch | × plain |", "|---|---|---|"]
    rows += [f"| {name} | {1e3 * s:.1f} | {s / base:.2f} |" for name, s in best.items()]
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="784-512-512-10@128")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes, batch_size = parse_case(args.case)
    if args.worker:
        print(json.dumps({"seconds": time_variant(args.worker, sizes, batch_size,
                                                  args.epochs)}))
        return
    print(f"{args.case}, float32, cpu backend, best epoch of {args.epochs} x "
          f"{args.processes} processes")
    print(table(measure(args.case, args.processes, args.epochs)))


if __name__ == "__main__":
    main()
