"""Data files through pyarrow (CSV, .csv.gz, Parquet, Feather) and data frames as inputs.

Every error names the file (or argument), the column and the line (or row) at fault.
"""

import gzip

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import gpubp
from gpubp import datasets
from gpubp.datasets import read_csv, read_table


def _csv(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


# -- CSV -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz"])
def test_csv_values_equal_pandas(tmp_path, name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 6)) * 10.0 ** rng.integers(-8, 8, size=(500, 6))
    labels = rng.choice(["cat", "dog", "eel"], 500)
    text = "\n".join(",".join([*(repr(float(v)) for v in row), lab]) for row, lab in zip(X, labels))
    path = _csv(tmp_path, text + "\n", name)
    ours_X, ours_labels = read_csv(path)
    theirs = pd.read_csv(path, header=None)
    np.testing.assert_array_equal(ours_X, theirs.iloc[:, :-1].to_numpy())
    np.testing.assert_array_equal(ours_X, X)
    assert ours_labels.tolist() == labels.tolist()


def test_csv_label_by_name_index_and_trimmed_strings(tmp_path):
    path = _csv(tmp_path, "kind, x ,y\n cat , 1, 2\ndog,3 ,4\n")
    X, labels = read_csv(path, "kind")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert labels.tolist() == ["cat", "dog"]
    X, labels = read_csv(path, 0)
    assert labels.tolist() == ["cat", "dog"]
    # label "y": the feature column "kind" holds names, not numbers
    with pytest.raises(ValueError, match=r"line 2, column 0 \('kind'\) must be numeric, "
                                         r"got 'cat'"):
        read_csv(_csv(tmp_path, "kind,x,y\ncat,1,2\n", "e.csv"), -1)


@pytest.mark.parametrize("text,pattern", [
    # the short *second* line is named, not the good third one
    ("1,2,x\n3,4\n5,6,y\n", r"line 2 has 2 columns, expected 3"),
    ("a,b,label\n1,2\n3,4,x\n", r"line 2 has 2 columns, expected 3"),
    ("1,2,x\n3,4,y\n5,6,7,z\n", r"line 3 has 4 columns, expected 3"),
    ("a,b,label\n1,2,x\n\n3,,y\n", r"line 4, column 1 \('b'\) has a missing value"),
    ("1,2,x\n\n\n3,zz,y\n", r"line 4, column 1 must be numeric, got 'zz'"),
    ("a,b,label\n1,2,x\n3,inf,y\n", r"line 3, column 1 \('b'\) must be finite, got inf"),
    ("a,b,label\n1,2,x\n3,4, \n", r"line 3, column 2 \('label'\) \(the label\) has a missing"),
    ("a,b,label\n", r"has a header but no data rows"),
    ("\n\n", r"is empty"),
    ("5\n6\n", r"at least one feature column and a label column, got 1"),
])
def test_csv_errors_name_the_column_and_line(tmp_path, text, pattern):
    path = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=pattern) as info:
        read_csv(path)
    assert str(path) in str(info.value)


def test_csv_ragged_row_far_into_a_large_file(tmp_path):
    lines = [f"{i},{i + 1},{i % 3}" for i in range(50_000)]
    lines[41_234] = "1,2"
    path = _csv(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 41235 has 2 columns, expected 3"):
        read_csv(path)


def test_load_file_csv_with_string_labels(tmp_path):
    path = _csv(tmp_path, "x,y,kind\n" + "".join(f"{i},{-i},{'ab'[i % 2]}\n" for i in range(20)))
    d = datasets.load_file(path, label_column="kind", scale=False)
    assert d.classes == ("a", "b") and d.n_features == 2


# -- Parquet and Feather -------------------------------------------------------------------
@pytest.fixture
def table():
    return pa.table({"x": [1.0, 2.0, 3.0, 4.0], "n": pa.array([1, 2, 3, 4], pa.int32()),
                     "kind": ["b", "a", "b", "a"], "code": [7, 9, 7, 9]})


@pytest.mark.parametrize("suffix", [".parquet", ".feather", ".arrow"])
def test_parquet_and_feather(tmp_path, table, suffix):
    path = tmp_path / f"t{suffix}"
    (pq.write_table if suffix == ".parquet" else feather.write_feather)(
        table.drop_columns(["code"]), path)
    X, labels = read_table(path, "kind")
    np.testing.assert_array_equal(X, [[1, 1], [2, 2], [3, 3], [4, 4]])
    assert labels.tolist() == ["b", "a", "b", "a"]
    d = datasets.load_file(path, label_column="kind", scale=False, test_size=0.5)
    assert d.classes == ("a", "b")
    (pq.write_table if suffix == ".parquet" else feather.write_feather)(
        table.drop_columns(["kind"]), path)
    X, labels = read_table(path)  # numeric labels, the last column
    assert labels.tolist() == [7, 9, 7, 9] and X.shape == (4, 2)


def test_parquet_errors_name_the_column_and_row(tmp_path, table):
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=r"column 'kind' must hold numbers, got Arrow type string"):
        read_table(path, "code")
    pq.write_table(pa.table({"x": [1.0, None, 3.0], "y": [0, 1, 0]}), path)
    with pytest.raises(ValueError, match=r"t.parquet: column 'x' has 1 missing value\(s\), "
                                         r"the first in row 2"):
        read_table(path)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="is not a readable Parquet file"):
        read_table(path)


# -- data frames and Arrow objects as X / y ------------------------------------------------
class ArrowStream:
    """Only the Arrow PyCapsule stream interface (as a third-party library would offer)."""

    def __init__(self, obj):
        self._obj = obj

    def __arrow_c_stream__(self, requested_schema=None):
        return self._obj.__arrow_c_stream__(requested_schema)


class ArrowArray:
    """Only the Arrow PyCapsule array interface."""

    def __init__(self, obj):
        self._obj = obj

    def __arrow_c_array__(self, requested_schema=None):
        return self._obj.__arrow_c_array__(requested_schema)


class HasArray:
    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._a, dtype=dtype)


def _frames(X, y):
    columns = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    table = pa.table(columns)
    return {
        "pandas": (pd.DataFrame(columns), pd.Series(y)),
        "polars": (pl.DataFrame(columns), pl.Series(y)),
        "pyarrow": (table, pa.array(y)),
        "capsule stream": (ArrowStream(table), ArrowArray(pa.array(y))),
        "capsule array": (ArrowArray(table.to_batches()[0]), ArrowStream(pa.chunked_array([y]))),
        "__array__": (HasArray(X), HasArray(y)),
    }


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow", "capsule stream",
                                  "capsule array", "__array__"])
def test_frames_and_arrow_objects_train_like_numpy(kind):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    Xf, yf = _frames(X, y)[kind]
    a = gpubp.Network([4, 5, 3], seed=0, dtype="float64")
    b = gpubp.Network([4, 5, 3], seed=0, dtype="float64")
    a.fit(X, y, epochs=2, verbose=0)
    b.fit(Xf, yf, epochs=2, verbose=0)
    np.testing.assert_array_equal(a.get_params()[0][0], b.get_params()[0][0])
    np.testing.assert_array_equal(a.predict(X), b.predict(Xf))
    assert a.evaluate(X, y) == b.evaluate(Xf, yf)


@pytest.mark.parametrize("frame", [pd.DataFrame, pl.DataFrame])
def test_frame_errors_name_the_column(frame):
    net = gpubp.Network([2, 2], seed=0)
    with pytest.raises(TypeError, match=r"X column 'city' \(index 1\) must hold numbers"):
        net.predict(frame({"x": [1.0, 2.0], "city": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"X column 'x' \(index 0\) has 1 missing value\(s\), "
                                         r"the first in row 2"):
        net.predict(frame({"x": [1.0, None], "z": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=r"Y has 1 missing value\(s\), the first in row 1"):
        net.fit(np.zeros((2, 2)), pd.Series([None, 1.0], dtype="Float64"), verbose=0)


def test_csv_of_features_only(tmp_path):
    X, labels = read_csv(_csv(tmp_path, "a,b\n1,2\n3,4\n"), None)
    assert labels is None
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    X, _ = read_csv(_csv(tmp_path, "5\n6\n", "one.csv"), None)
    np.testing.assert_array_equal(X, [[5], [6]])
    with pytest.raises(ValueError, match=r"line 3, column 1 \('b'\) must be numeric, got 'x'"):
        read_csv(_csv(tmp_path, "a,b\n1,2\n3,x\n", "bad.csv"), None)
