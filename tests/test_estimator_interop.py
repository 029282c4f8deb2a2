"""The scikit-learn estimators with data frames and Arrow inputs, and their ONNX export."""

import json
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from gpubp.sklearn.estimators import MLPClassifier, MLPRegressor

ort = pytest.importorskip("onnxruntime")


class ArrowStream:
    def __init__(self, obj):
        self._obj = obj

    def __arrow_c_stream__(self, requested_schema=None):
        return self._obj.__arrow_c_stream__(requested_schema)


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of a short run
        return est.fit(X, y)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int), {"a": X[:, 0], "b": X[:, 1], "c": X[:, 2]}


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow", "capsule"])
def test_feature_names_are_kept_and_checked(data, kind):
    X, y, cols = data
    make = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "pyarrow": pa.table,
            "capsule": lambda c: ArrowStream(pa.table(c))}[kind]
    clf = _fit(MLPClassifier((4,), max_iter=5, random_state=0), make(cols), y)
    assert clf.feature_names_in_.tolist() == ["a", "b", "c"] and clf.n_features_in_ == 3
    reference = _fit(MLPClassifier((4,), max_iter=5, random_state=0), X, y)
    np.testing.assert_array_equal(clf.predict_proba(make(cols)), reference.predict_proba(X))
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        clf.predict(pd.DataFrame({"b": X[:, 1], "a": X[:, 0], "c": X[:, 2]}))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        clf.predict(X)


def _onnx_out(est, path, X):
    est.to_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(["output"], {"X": X})[0]


def test_estimators_export_to_onnx(data, tmp_path):
    X, y, cols = data
    multi = _fit(MLPClassifier((5,), max_iter=5, random_state=0), pd.DataFrame(cols),
                 np.array(["x", "y", "z"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)])
    session, out = _onnx_out(multi, tmp_path / "multi.onnx", X)
    np.testing.assert_allclose(out, multi.predict_proba(pd.DataFrame(cols)), rtol=1e-12, atol=1e-15)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes_"]) == ["x", "y", "z"]
    assert json.loads(meta["feature_names_in_"]) == ["a", "b", "c"]
    binary = _fit(MLPClassifier((5,), max_iter=5, random_state=0, dtype="float32"), X, y)
    _, out = _onnx_out(binary, tmp_path / "binary.onnx", X.astype(np.float32))
    np.testing.assert_allclose(out[:, 0], binary.predict_proba(X)[:, 1], rtol=1e-5)
    reg = _fit(MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0), X, X @ [1.0, 2.0, 3.0])
    _, out = _onnx_out(reg, tmp_path / "reg.onnx", X)
    np.testing.assert_allclose(out[:, 0], reg.predict(X), rtol=1e-12)


def test_unfitted_estimator_cannot_export(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MLPClassifier().to_onnx(tmp_path / "m.onnx")
