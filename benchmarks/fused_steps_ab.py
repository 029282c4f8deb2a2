"""In-process A/B of the compiled epoch: every optimizer's step fused per layer in the
backward pass against the flat pass over theta (the same epoch with a clip_norm no
gradient reaches, which takes the unfused path). docs/performance.md, issue 20.

Run: PYTHONPATH=. python benchmarks/fused_steps_ab.py
"""
import time

import numpy as np

import gpubp
from gpubp.core import compiled
from gpubp.optim.optimizers import SGD, Adam, AdamW

CASES = [((64, 64, 10), 32), ((784, 256, 256, 10), 128)]
MAKERS = {"momentum": lambda: SGD(lr=0.05, momentum=0.9), "adam": lambda: Adam(lr=1e-3),
          "adamw": lambda: AdamW(lr=1e-3)}


def main():
    """Print each case and optimizer's best epochs, fused and flat."""
    for sizes, B in CASES:
        n = 4096
        rng = np.random.default_rng(0)
        X = rng.random((n, sizes[0])).astype("float32")
        Y = np.eye(sizes[-1], dtype="float32")[rng.integers(0, sizes[-1], n)]
        for name, mk in MAKERS.items():
            best = {}
            runs = {}
            for side in ("fused", "flat"):
                net = gpubp.Network(list(sizes), backend="cpu", seed=0)
                opt = mk()
                if side == "flat":
                    opt.set_clipping(clip_norm=1e300)
                order = np.arange(n)
                compiled.train_epoch(net, opt, X, Y, order, B)
                runs[side] = (net, opt)
                best[side] = float("inf")
            for r in range(7):
                for side in (("fused", "flat") if r % 2 == 0 else ("flat", "fused")):
                    net, opt = runs[side]
                    order = np.random.default_rng(r).permutation(n)
                    t0 = time.perf_counter()
                    compiled.train_epoch(net, opt, X, Y, order, B)
                    best[side] = min(best[side], time.perf_counter() - t0)
            print(f"{'-'.join(map(str, sizes))}@{B} {name}: fused {best['fused']*1e3:.2f} ms, "
                  f"flat pass {best['flat']*1e3:.2f} ms, flat/fused {best['flat']/best['fused']:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
