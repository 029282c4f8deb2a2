"""load_file's split and standardisation (issue 18): no temporary the size of the data,
the same results as the textbook formulas, float32 kept, labels encoded from the distinct
strings alone."""

import tracemalloc

import numpy as np
import pytest

from gpubp import datasets


def test_split_and_standardize_allocate_only_the_two_parts():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (20_000, 64))
    y = rng.integers(0, 10, 20_000)
    tracemalloc.start()
    try:
        d = datasets._split(X, y, tuple("0123456789"), "x", 0.25, 0, True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the train and test parts together are X's size; np.std and (X - mean) / std would
    # each add temporaries of the training part's size on top
    assert peak < 1.15 * X.nbytes, peak / X.nbytes
    assert len(d.X_train) + len(d.X_test) == 20_000 and d.X_train.shape[1] == 64


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_standardize_matches_mean_and_std(dtype):
    rng = np.random.default_rng(1)
    A = rng.normal(1e3, 5.0, (500, 7)).astype(dtype)
    A[:, 3] = 2.5  # a constant column: divided by 1
    B = rng.normal(1e3, 5.0, (50, 7)).astype(dtype)
    a, b = datasets.standardize(A, B)
    mean, std = A.astype(np.float64).mean(0), A.astype(np.float64).std(0)
    std[std == 0] = 1
    tol = 1e-10 if dtype == np.float64 else 2e-3
    assert a.dtype == dtype and b.dtype == dtype
    np.testing.assert_allclose(a, (A - mean) / std, atol=tol)
    np.testing.assert_allclose(b, (B - mean) / std, atol=tol)
    assert np.array_equal(A[:, 3], np.full(500, 2.5, dtype))  # inputs untouched


def test_encode_labels_from_distinct_strings_keeps_its_semantics():
    y, classes = datasets.encode_labels(np.array(["10", " 9", "9", "1.0", "1", "10"]))
    assert classes == ("1", "9", "10") and y.tolist() == [2, 1, 1, 0, 0, 2]
    y, classes = datasets.encode_labels(np.array(["dog", " cat", "cat", "dog"], dtype=object))
    assert classes == ("cat", "dog") and y.tolist() == [1, 0, 0, 1]
    with pytest.raises(ValueError, match="NaN or infinite"):
        datasets.encode_labels(np.array(["1", "nan"]))
