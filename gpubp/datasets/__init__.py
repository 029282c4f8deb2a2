"""Real data sets shipped inside the package (no download), and the user's own files.

>>> from gpubp import datasets
>>> d = datasets.load("digits")
>>> d.X_train.shape, d.y_train.shape, d.classes[:3]
((1347, 64), (1347,), ('0', '1', '2'))

``load`` also takes a path: a ``.csv`` (optionally ``.csv.gz``), ``.parquet`` or
``.feather``/``.arrow`` file whose label column holds class names or numbers (read with
pyarrow, see :mod:`gpubp.datasets.readers`), or an ``.npz`` with arrays ``X`` and ``y``
(or ``X_train``, ``y_train``, ``X_test``, ``y_test``). Labels are encoded as indices into
``classes``.

Sources and licences: ``data/README.md`` beside this file.
"""

import gzip
import os
from importlib import resources
from typing import NamedTuple

import numpy as np

from gpubp.datasets.readers import (ARROW_SUFFIXES, CSV_SUFFIXES, PARQUET_SUFFIXES, is_number,
                                    read_csv, read_table)
import zipfile

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
        n_test = round(test_size * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardize(X_train, X_test):
    """Scale both parts by the training mean and standard deviation (constant columns: 1)."""
    X_train = np.asarray(X_train)
    dtype = X_train.dtype if X_train.dtype.kind == "f" else np.float64
    X_train, X_test = np.array(X_train, dtype=dtype), np.array(X_test, dtype=dtype)
    _standardize_inplace(X_train, X_test)
    return X_train, X_test


def _standardize_inplace(X_train, X_test):
    """:func:`standardize` on arrays of our own, without a temporary of their size.

    Four passes over the training part (mean; centre; sum of squares, which ``einsum``
    reduces without the squared copy ``np.std`` makes; scale) and two over the test part.
    """
    mean = X_train.mean(axis=0, dtype=np.float64)  # float64 sums over float32 data too
    X_train -= mean.astype(X_train.dtype)
    n = max(len(X_train), 1)
    std = np.sqrt(np.einsum("ij,ij->j", X_train, X_train, dtype=np.float64) / n)
    std[std == 0] = 1.0
    mean, std = mean.astype(X_train.dtype), std.astype(X_train.dtype)
    X_train /= std
    X_test -= mean
    X_test /= std


def load(name, test_size=0.25, seed=0, scale=True, label_column=-1):
    """A data set as a stratified, standardised train/test :class:`Dataset`.

    Parameters
    ----------
    name : {"digits", "breast_cancer", "iris", "wine"} or path
        A bundled data set, or a ``.csv``/``.csv.gz``/``.npz`` file (see
        :func:`load_file`).
    test_size : float
        Fraction of each class held out for testing.
    seed : int
        Seed of the split.
    scale : bool
        Standardise the features with the training part's mean and deviation.
    label_column : int or str
        For CSV files: the label column, by index or header name (default the last).
    """
    if isinstance(name, str) and name in _FILES:
        X, y, classes = load_arrays(name)
        return _split(X, y, classes, name, test_size, seed, scale)
    if isinstance(name, (str, os.PathLike)) and os.path.exists(name):
        return load_file(name, label_column=label_column, test_size=test_size, seed=seed,
                         scale=scale)
    raise ValueError(f"name must be one of {NAMES} or the path of a .csv or .npz file, "
                     f"got {name!r} (no such data set or file)")


def _split(X, y, classes, name, test_size, seed, scale, split=None):
    if split is None:
        train, test = train_test_split(X, y, test_size, seed)
        # copies of our own (the gathers): standardised in place
        X_train, X_test, y_train, y_test = X.take(train, 0), X.take(test, 0), y[train], y[test]
        if scale and X_train.dtype.kind == "f":
            _standardize_inplace(X_train, X_test)
            scale = False
    else:
        X_train, X_test, y_train, y_test = split
    if scale:
        X_train, X_test = standardize(X_train, X_test)
    return Dataset(X_train, X_test, y_train, y_test, tuple(classes), name)


def encode_labels(labels, name="labels"):
    """Class indices and class names from labels given as strings or numbers.

    Numeric labels are ordered by value (``"10"`` after ``"9"``), others alphabetically,
    as scikit-learn's ``LabelEncoder`` would.

    Parameters
    ----------
    labels : array-like, shape (P,)

    Returns
    -------
    y : ndarray of int64, shape (P,)
        ``classes[y[p]]`` is the label of example ``p``.
    classes : tuple of str
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    if labels.dtype.kind in "biuf":
        values, inverse = labels, None
    else:
        # the distinct strings first: parsing a number per example is the slow part
        distinct, inverse = np.unique(labels.astype(str, copy=False), return_inverse=True)
        text = np.char.strip(distinct)
        try:
            values = text.astype(np.float64)
        except ValueError:
            values = None
        if values is None:
            uniques, y = np.unique(text, return_inverse=True)
            return y[inverse].astype(np.int64), tuple(str(u) for u in uniques)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"{name} must not hold NaN or infinite values")
    uniques, y = np.unique(values, return_inverse=True)
    if inverse is not None:
        y = y[inverse]
    names = tuple(str(int(u)) if float(u).is_integer() else str(u) for u in uniques)
    return y.astype(np.int64), names


def load_file(path, label_column=-1, test_size=0.25, seed=0, scale=True):
    """A user's data file as a stratified, standardised train/test :class:`Dataset`.

    Parameters
    ----------
    path : str or os.PathLike
        ``.csv`` or ``.csv.gz``: comma-separated numeric features and one label column,
        with or without a header row. ``.parquet``/``.pq``, ``.feather``/``.arrow``/``.ipc``:
        numeric feature columns and one label column. ``.npz``: arrays ``X`` (P, n) and ``y`` (P,), or
        ``X_train``, ``y_train``, ``X_test``, ``y_test`` for a split of your own.
    label_column : int or str
        CSV label column, by index (negative counts from the end) or header name.
    test_size, seed, scale
        As :func:`load` (the split is ignored when the ``.npz`` brings its own).

    Returns
    -------
    Dataset
        ``y_*`` are indices into ``classes`` (the label names, as strings).
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    lower = path.lower()
    if lower.endswith(".npz"):
        return _load_npz(path, name, test_size, seed, scale)
    if lower.endswith(CSV_SUFFIXES):
        X, labels = read_csv(path, label_column)
    elif lower.endswith(PARQUET_SUFFIXES + ARROW_SUFFIXES):
        X, labels = read_table(path, label_column)
    else:
        raise ValueError(f"path must end in .csv, .csv.gz, .parquet, .pq, .feather, .arrow, "
                         f".ipc or .npz, got {path!r}")
    y, classes = encode_labels(labels, f"the label column of {name}")
    return _split(X, y, classes, name, test_size, seed, scale)


def _load_npz(path, name, test_size, seed, scale):
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); "
                         f"labels must be numbers or fixed-width strings, not objects") from None
    if {"X", "y"} <= set(arrays):
        X, y, classes = _xy(arrays["X"], arrays["y"], path, "X", "y")
        return _split(X, y, classes, name, test_size, seed, scale)
    keys = {"X_train", "y_train", "X_test", "y_test"}
    if keys <= set(arrays):
        n_train = len(arrays["y_train"])
        X = np.concatenate([arrays["X_train"], arrays["X_test"]]) \
            if arrays["X_train"].ndim == arrays["X_test"].ndim == 2 else arrays["X_train"]
        X, y, classes = _xy(X, np.concatenate([arrays["y_train"], arrays["y_test"]]), path,
                            "X_train/X_test", "y_train/y_test")
        split = (X[:n_train], X[n_train:], y[:n_train], y[n_train:])
        return _split(X, y, classes, name, test_size, seed, scale, split)
    raise ValueError(f"{path} must hold arrays 'X' and 'y' (or X_train, y_train, X_test, "
                     f"y_test), got {sorted(arrays)}")


def _xy(X, labels, path, xname, yname):
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise ValueError(f"{path}: {xname} must be a 2-D numeric array, got shape {X.shape} "
                         f"dtype {X.dtype}")
    if labels.shape != (X.shape[0],):
        raise ValueError(f"{path}: {yname} must have shape ({X.shape[0]},), got {labels.shape}")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise ValueError(f"{path}: {xname} must be finite, got NaN or infinite values")
    y, classes = encode_labels(labels, f"{path}: {yname}")
    return X, y, classes
