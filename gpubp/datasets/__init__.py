"""Real data sets shipped inside the package (no download), split and standardised.

>>> from gpubp import datasets
>>> d = datasets.load("digits")
>>> d.X_train.shape, d.y_train.shape, d.classes[:3]
((1347, 64), (1347,), ('0', '1', '2'))

Sources and licences: ``data/README.md`` beside this file.
"""

import gzip
from importlib import resources
from typing import NamedTuple

import numpy as np

NAMES = ("digits", "breast_cancer", "iris", "wine")
_FILES = {"digits": "digits.csv.gz", "breast_cancer": "breast_cancer.csv",
          "iris": "iris.csv", "wine": "wine_data.csv"}


class Dataset(NamedTuple):
    """A train/test split. ``X_*``: (P, n_features) float64; ``y_*``: (P,) int labels."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    classes: tuple
    name: str

    @property
    def n_features(self):
        return self.X_train.shape[1]

    @property
    def n_classes(self):
        return len(self.classes)


def load_arrays(name):
    """All examples of a bundled data set: ``(X, y, classes)``, unsplit and unscaled."""
    if name not in _FILES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    ref = resources.files(__package__).joinpath("data", _FILES[name])
    if name == "digits":
        with ref.open("rb") as f, gzip.open(f, "rt") as text:
            table = np.loadtxt(text, delimiter=",")
        classes = tuple(str(k) for k in range(10))
    else:
        with ref.open("r") as f:
            first = f.readline().strip().split(",")
            table = np.loadtxt(f, delimiter=",")
        classes = tuple(first[2:])
    return table[:, :-1], table[:, -1].astype(np.int64), classes


def train_test_split(X, y, test_size=0.25, seed=0):
    """Stratified split: each class keeps its proportion in both parts.

    Returns index arrays ``(train, test)``.
    """
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(test_size * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardize(X_train, X_test):
    """Scale both parts by the training mean and standard deviation (constant columns: 1)."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def load(name, test_size=0.25, seed=0, scale=True):
    """A bundled data set as a stratified, standardised train/test :class:`Dataset`.

    Parameters
    ----------
    name : {"digits", "breast_cancer", "iris", "wine"}
    test_size : float
        Fraction of each class held out for testing.
    seed : int
        Seed of the split.
    scale : bool
        Standardise the features with the training part's mean and deviation.
    """
    X, y, classes = load_arrays(name)
    train, test = train_test_split(X, y, test_size, seed)
    X_train, X_test = X[train], X[test]
    if scale:
        X_train, X_test = standardize(X_train, X_test)
    return Dataset(X_train, X_test, y[train], y[test], classes, name)
