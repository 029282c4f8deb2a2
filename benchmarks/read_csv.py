"""CSV reading speed: ``gpubp.datasets.read_csv`` and ``load_file`` against pandas and bare pyarrow.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/read_csv.py [--rows 200000]

Writes a numeric CSV (64 features with 4 decimals and an integer label: about 104 MB at
200,000 rows) to a temporary directory, then times the three readers in interleaved
rounds and prints each one's best time and its ratio to pandas. ``gpubp.load_file`` is
the whole of ``gpubp.datasets.load_file``: the read, the label encoding, the stratified
split and the standardisation. Only the ratios of one
run mean anything on a shared machine.
"""

import argparse
import os
import tempfile
import time

import numpy as np


def write_csv(path, rows, features=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    y = rng.integers(0, 10, rows)
    table = np.column_stack([X, y])
    half = features // 2  # 4 and 5 decimals: about 104 MB at 200,000 rows
    fmt = ",".join(["%.5f"] * half + ["%.4f"] * (features - half) + ["%d"])
    np.savetxt(path, table, fmt=fmt, delimiter=",")
    return os.path.getsize(path)


def readers():
    import pandas as pd
    import pyarrow.csv as pacsv

    from gpubp.datasets import load_file, read_csv

    return {
        "gpubp.read_csv": lambda p: read_csv(p),
        "gpubp.load_file": lambda p: load_file(p),
        "pandas.read_csv": lambda p: pd.read_csv(p, header=None).to_numpy(),
        "pyarrow.csv.read_csv": lambda p: pacsv.read_csv(
            p, read_options=pacsv.ReadOptions(autogenerate_column_names=True)),
    }


def run(rows=200_000, rounds=5, out=print):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "numeric.csv")
        size = write_csv(path, rows)
        out(f"file: {rows} rows x 65 columns, {size / 1e6:.1f} MB")
        times = {name: [] for name in readers()}
        for _ in range(rounds):  # interleaved, so that interference hits all alike
            for name, read in readers().items():
                start = time.perf_counter()
                read(path)
                times[name].append(time.perf_counter() - start)
        best = {name: min(t) for name, t in times.items()}
        for name, t in best.items():
            out(f"{name:22s} best {t:.3f} s  median {np.median(times[name]):.3f} s  "
                f"{t / best['pandas.read_csv']:.2f}x pandas")
        return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run(args.rows, args.rounds)
