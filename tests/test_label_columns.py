"""Label columns named like real data sets name them, or given by a negative index as text.

The reader tests named their label columns "species" or "kind" only, so a reader that
took only alphabetic strings for names passed them (issue 24). Here the label column
sits in the middle of each row (features before and after it) and is named ``class_id``,
``y2``, ``class label`` or ``2nd``, or given as the string ``"-2"`` (the index the
command line hands over): in Python (CSV, with and without a header, Parquet, Feather)
and through ``gpubp train/evaluate --label-column``. A name that is no column is an
error naming the columns.
"""

import re

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from gpubp import datasets
from gpubp.cli.commands import main

NAMES = ["class_id", "y2", "class label", "2nd"]
HEADER = ["f0", "f1", "f2", None, "f3"]  # the label is column 3 of 5, i.e. also column -2


def _data(n=40, seed=0):
    """Two separable blobs; labels "cat"/"dog"."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(-2, 1, (n // 2, 4)), rng.normal(2, 1, (n // 2, 4))])
    labels = np.array(["cat"] * (n // 2) + ["dog"] * (n // 2))
    return X, labels


def _csv(path, X, labels, label_name="kind", header=True):
    lines = []
    if header:
        lines.append(",".join(label_name if h is None else h for h in HEADER))
    for x, lab in zip(X, labels):
        lines.append(",".join([*(f"{v:.6f}" for v in x[:3]), lab, f"{x[3]:.6f}"]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _rounded(X):
    return np.round(X, 6)


@pytest.mark.parametrize("label_column", NAMES + ["-2"])
def test_csv_label_column_in_the_middle_of_the_row(tmp_path, label_column):
    X, labels = _data()
    name = label_column if label_column in NAMES else "kind"
    path = _csv(tmp_path / "d.csv", X, labels, name)
    got_X, got_labels = datasets.read_csv(path, label_column)
    np.testing.assert_allclose(got_X, _rounded(X), rtol=0, atol=1e-12)
    assert got_labels.tolist() == labels.tolist()
    d = datasets.load(str(path), label_column=label_column, scale=False)
    assert d.classes == ("cat", "dog") and d.X_train.shape[1] == 4
    assert len(d.y_train) + len(d.y_test) == 40


@pytest.mark.parametrize("label_column", ["-2", -2, 3, "3"],
                         ids=["text-minus-2", "int-minus-2", "int-3", "text-3"])
def test_csv_without_a_header_takes_an_index_given_as_text_or_number(tmp_path, label_column):
    X, labels = _data()
    path = _csv(tmp_path / "d.csv", X, labels, header=False)
    got_X, got_labels = datasets.read_csv(path, label_column)
    np.testing.assert_allclose(got_X, _rounded(X), rtol=0, atol=1e-12)
    assert got_labels.tolist() == labels.tolist()


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
@pytest.mark.parametrize("label_column", NAMES + ["-2"])
def test_table_label_column_in_the_middle(tmp_path, suffix, label_column):
    X, labels = _data()
    name = label_column if label_column in NAMES else "kind"
    columns = {"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2], name: labels, "f3": X[:, 3]}
    table = pa.table(columns)
    path = tmp_path / f"d{suffix}"
    (pq.write_table if suffix == ".parquet" else feather.write_feather)(table, path)
    d = datasets.load_file(path, label_column=label_column, scale=False)
    assert d.classes == ("cat", "dog")
    got = np.sort(np.concatenate([d.X_train, d.X_test]), axis=0)
    np.testing.assert_array_equal(got, np.sort(X, axis=0))


def test_a_name_that_is_no_column_is_an_error_naming_the_columns(tmp_path):
    X, labels = _data()
    path = _csv(tmp_path / "d.csv", X, labels, "class_id")
    for missing in ("class", "y3", "class  label", "2nd"):
        with pytest.raises(ValueError, match=r"label_column must be one of the columns "
                                             r"\['f0', 'f1', 'f2', 'class_id', 'f3'\], got "
                                             + re.escape(repr(missing))):
            datasets.read_csv(path, missing)
    with pytest.raises(ValueError, match=r"must be in \[-5, 4\] for 5 columns, got -6"):
        datasets.read_csv(path, "-6")


@pytest.mark.parametrize("label_column", NAMES + ["-2"])
def test_cli_train_and_evaluate_take_the_label_column(tmp_path, capsys, label_column):
    X, labels = _data(80)
    name = label_column if label_column in NAMES else "kind"
    path = _csv(tmp_path / "animals.csv", X, labels, name)
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(path), "--label-column", label_column,
                 "--epochs", "20", "--save", str(model), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "data: animals.csv, 60 train / 20 test examples, 4 features, 2 classes" in out
    assert float(re.search(r"test accuracy (\d\.\d+)", out).group(1)) == 1.0
    assert main(["evaluate", "--model", str(model), "--data", str(path),
                 "--label-column", label_column]) == 0
    out = capsys.readouterr().out
    assert "examples 80" in out and float(re.search(r"accuracy (\d\.\d+)", out).group(1)) == 1.0


def test_cli_names_the_columns_for_a_label_column_that_is_none(tmp_path, capsys):
    X, labels = _data()
    path = _csv(tmp_path / "d.csv", X, labels, "class label")
    assert main(["train", "--data", str(path), "--label-column", "label", "--epochs", "1",
                 "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpubp train: error: label_column must be one of the columns "
                          "['f0', 'f1', 'f2', 'class label', 'f3'], got 'label'"), err
