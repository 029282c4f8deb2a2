"""ONNX export: onnxruntime's outputs equal net.forward for every activation/output pairing."""

import os

import numpy as np
import pytest

import gpubp

from tests.conftest import PAIRINGS, randomize_biases

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL = {"float32": 1e-5, "float64": 1e-12}
WORST = {}  # (hidden, output, dtype) -> worst relative error seen, for the record


def _run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"X": X})[0]


def _rel_err(ours, theirs):
    """Largest difference relative to the largest output of the batch."""
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(ours)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,output,loss", PAIRINGS)
def test_onnxruntime_equals_forward(tmp_path, hidden, output, loss, dtype):
    rng = np.random.default_rng(0)
    for depth, sizes in enumerate(([5, 3], [5, 7, 3], [5, 8, 6, 4, 3])):
        net = randomize_biases(gpubp.Network(sizes, hidden=hidden, output=output, loss=loss,
                                             dtype=dtype, seed=depth))
        path = net.to_onnx(tmp_path / f"m{depth}.onnx")
        for P in (1, 37):  # one model, two batch sizes: the batch dimension is dynamic
            X = rng.normal(size=(P, 5)).astype(dtype)
            ours, theirs = net.forward(X), _run(path, X)
            assert theirs.dtype == np.dtype(dtype) and theirs.shape == (P, 3)
            # rtol elementwise; an output that is a cancelling sum sits near 0, where the
            # summation order alone (MatMul's vs BLAS's) decides the last bits: there the
            # tolerance is rtol times the batch's largest output
            np.testing.assert_allclose(theirs, ours, rtol=RTOL[dtype],
                                       atol=RTOL[dtype] * np.abs(ours).max())
            key = (hidden, output, dtype)
            WORST[key] = max(WORST.get(key, 0.0), _rel_err(ours, theirs))


def test_model_is_valid_and_describes_the_network(tmp_path):
    net = gpubp.Network([4, 6, 2], hidden="relu", output="softmax", seed=0)
    path = net.to_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 21
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 4
    props = {p.key: p.value for p in model.metadata_props}
    assert props["sizes"] == "4,6,2" and props["hidden"] == "relu"
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "MatMul", "Add",
                                                     "Softmax"]


def test_scaler_is_part_of_the_graph(tmp_path):
    from gpubp.io.onnx import to_onnx

    net = gpubp.Network([3, 4, 2], seed=0, dtype="float64")
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 3.0])
    path = to_onnx(net, tmp_path / "s.onnx", scaler=(mean, std), metadata={"classes": "a,b"})
    X = np.random.default_rng(1).normal(size=(9, 3))
    np.testing.assert_allclose(_run(path, X), net.forward((X - mean) / std), rtol=1e-12)
    with pytest.raises(ValueError, match=r"scaler must hold a mean and a std of shape \(3,\)"):
        to_onnx(net, tmp_path / "t.onnx", scaler=(mean[:2], std))


def test_export_is_atomic_and_names_the_users_path(tmp_path, monkeypatch):
    net = gpubp.Network([3, 2], seed=0)
    path = tmp_path / "m.onnx"
    net.to_onnx(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        gpubp.Network([3, 2], seed=1).to_onnx(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.onnx"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match=f"{tmp_path / 'nope' / 'm.onnx'}.*does not exist"):
        net.to_onnx(tmp_path / "nope" / "m.onnx")


def test_agreement_was_recorded():
    """Runs after the pairing tests: prints the worst relative error per pairing."""
    if not WORST:
        pytest.skip("run with the pairing tests of this module")
    for key, err in sorted(WORST.items()):
        print(f"{key}: max rel err {err:.2e}")
        assert err <= RTOL[key[2]]
