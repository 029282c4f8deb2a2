"""gpubp.datasets: the bundled sets and the user's CSV/NPZ files, labels of any kind."""

import gzip

import numpy as np
import pytest

from gpubp import datasets


@pytest.mark.parametrize("name,n_features,n_classes,n", [
    ("digits", 64, 10, 1797), ("breast_cancer", 30, 2, 569), ("iris", 4, 3, 150), ("wine", 13, 3, 178)])
def test_bundled_sets_are_split_stratified_and_standardised(name, n_features, n_classes, n):
    d = datasets.load(name)
    assert d.n_features == n_features and d.n_classes == n_classes
    assert len(d.y_train) + len(d.y_test) == n
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-10)
    for label in range(n_classes):  # each class keeps its share in the test part
        share = np.mean(d.y_test == label) - np.mean(d.y_train == label)
        assert abs(share) < 0.02


def _write_csv(path, header, rows):
    text = "\n".join(([header] if header else []) + [",".join(map(str, r)) for r in rows]) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize("filename", ["data.csv", "data.csv.gz"])
def test_csv_with_header_and_string_labels(tmp_path, filename):
    rows = [[i, 2 * i, ["b", "a", "c"][i % 3]] for i in range(30)]
    path = tmp_path / filename
    _write_csv(path, "x,y,kind", rows)
    d = datasets.load(path, scale=False)
    assert d.classes == ("a", "b", "c") and d.name == filename
    X = np.vstack([d.X_train, d.X_test])
    labels = np.array(d.classes)[np.concatenate([d.y_train, d.y_test])]
    by_x = dict(zip(X[:, 0].astype(int), labels))
    assert all(by_x[i] == ["b", "a", "c"][i % 3] for i in range(30))
    np.testing.assert_array_equal(X[:, 1], 2 * X[:, 0])


def test_csv_without_header_label_first_and_numeric_labels(tmp_path):
    rows = [[[10, 9, 2][i % 3], i, i + 0.5] for i in range(30)]
    path = tmp_path / "d.csv"
    _write_csv(path, None, rows)
    d = datasets.load_file(path, label_column=0, scale=False)
    assert d.classes == ("2", "9", "10")  # numeric labels sort by value
    assert d.n_features == 2


def test_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), np.array(["yes", "no"] * 20)
    np.savez(tmp_path / "a.npz", X=X, y=y)
    d = datasets.load(tmp_path / "a.npz")
    assert d.classes == ("no", "yes") and len(d.y_train) == 30
    np.savez(tmp_path / "b.npz", X_train=X[:30], y_train=y[:30], X_test=X[30:], y_test=y[30:])
    d = datasets.load(tmp_path / "b.npz", scale=False)
    np.testing.assert_array_equal(d.X_test, X[30:])
    np.testing.assert_array_equal(np.array(d.classes)[d.y_test], y[30:])


def test_encode_labels():
    y, classes = datasets.encode_labels(np.array(["b", "a", "b"]))
    assert classes == ("a", "b") and y.tolist() == [1, 0, 1]
    y, classes = datasets.encode_labels([1.0, 3.0, 1.0])
    assert classes == ("1", "3") and y.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="labels must be 1-D, got shape"):
        datasets.encode_labels(np.zeros((2, 2)))


@pytest.mark.parametrize("content,kwargs,exc,pattern", [
    ("a,b,c\n1,2,x\n3,4,y\n", {"label_column": "d"}, ValueError,
     r"label_column must be one of the columns \['a', 'b', 'c'\], got 'd'"),
    ("1,2,x\n3,4,y\n", {"label_column": 5}, ValueError, r"label_column must be in \[-3, 2\] for 3 columns, got 5"),
    ("1,2,x\n3,4,y\n", {"label_column": "name"}, ValueError,
     r"label_column must be one of the columns \['1', '2', 'x'\], got 'name'"),
    ("1,2,x\n3,4\n", {}, ValueError, r"line 2 has 2 columns, expected 3"),
    ("1,2,x\n3,zz,y\n", {}, ValueError, r"line 2, column 1 must be numeric, got 'zz'"),
    ("", {}, ValueError, r"is empty"),
    ("1,nan,x\n3,4,y\n", {}, ValueError, r"line 1, column 1 must be finite, got nan"),
])
def test_bad_csv_files(tmp_path, content, kwargs, exc, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(exc, match=pattern):
        datasets.load_file(path, **kwargs)


def test_bad_names_and_npz(tmp_path):
    with pytest.raises(ValueError, match=r"name must be one of .*got 'mnist'"):
        datasets.load("mnist")
    (tmp_path / "f.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"path must end in .csv, .csv.gz, .parquet"):
        datasets.load_file(tmp_path / "f.txt")
    np.savez(tmp_path / "c.npz", features=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"must hold arrays 'X' and 'y'.*got \['features'\]"):
        datasets.load(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match=r"y must have shape \(3,\), got \(4,\)"):
        datasets.load(tmp_path / "d.npz")
