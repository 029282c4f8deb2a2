"""ONNX export of networks whose hidden layers have different activations (issue 24).

tests/test_onnx_export.py builds networks with one activation name for every hidden
layer, so an export that used the first hidden layer's activation everywhere passed it.
Here each hidden layer has its own: onnxruntime must equal ``net.forward``, and the
graph's operators, in order, must be each layer's MatMul, Add and its own activation.
"""

import numpy as np
import pytest

import gpubp
from gpubp.cli.commands import main

from tests.conftest import randomize_biases

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL = {"float32": 1e-5, "float64": 1e-12}
OPS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "identity": "Identity",
       "softmax": "Softmax"}

# (sizes, hidden per layer, output, loss): every hidden activation after every other one
MIXED = [
    ([5, 8, 6, 3], ["relu", "tanh"], "softmax", None),
    ([5, 8, 6, 3], ["tanh", "relu"], "softmax", None),
    ([5, 8, 7, 6, 4], ["sigmoid", "relu", "identity"], "sigmoid", "binary_cross_entropy"),
    ([5, 6, 6, 6, 6, 2], ["identity", "sigmoid", "tanh", "relu"], "identity", "mse"),
    ([4, 9, 9, 9, 3], ["relu", "relu", "sigmoid"], "tanh", "mse"),
]


def _run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"X": X})[0]


def _expected_ops(hidden, output, scaled=False):
    ops = ["Sub", "Div"] if scaled else []
    for g in list(hidden) + [output]:
        ops += ["MatMul", "Add", OPS[g]]
    return ops


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes,hidden,output,loss", MIXED,
                         ids=["-".join(m[1]) + "-" + m[2] for m in MIXED])
def test_each_hidden_layer_exports_its_own_activation(tmp_path, sizes, hidden, output, loss,
                                                      dtype):
    net = randomize_biases(gpubp.Network(sizes, hidden=hidden, output=output, loss=loss,
                                         dtype=dtype, seed=3))
    assert net.hidden == hidden
    path = net.to_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == _expected_ops(hidden, output)
    # the activations in the order of the layers they follow: z1 -> a1, z2 -> a2, ...
    activations = [n for n in model.graph.node if n.op_type in OPS.values()]
    assert [n.input[0] for n in activations] == [f"z{l}" for l in range(1, len(sizes))]
    assert {p.key: p.value for p in model.metadata_props}["hidden"] == ",".join(hidden)
    X = np.random.default_rng(1).normal(size=(23, sizes[0])).astype(dtype)
    ours, theirs = net.forward(X), _run(path, X)
    assert theirs.shape == ours.shape and theirs.dtype == np.dtype(dtype)
    np.testing.assert_allclose(theirs, ours, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * np.abs(ours).max())


def test_a_trained_mixed_network_exports_through_the_command_line(tmp_path, capsys):
    """Saved with ``net.save``, exported by ``gpubp export``: the loaded network keeps
    its per-layer activations, and onnxruntime equals the reloaded network's forward."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    net = gpubp.Network([4, 10, 8, 3], hidden=["relu", "tanh"], dtype="float64", seed=0)
    net.fit(X, y, epochs=5, batch_size=16, lr=0.1, verbose=0)
    model, exported = tmp_path / "m.npz", tmp_path / "m.onnx"
    net.save(model)
    assert main(["export", "--model", str(model), "--onnx", str(exported)]) == 0
    capsys.readouterr()
    loaded = gpubp.load(model)
    assert loaded.hidden == ["relu", "tanh"]
    graph = onnx.load(str(exported)).graph
    assert [n.op_type for n in graph.node] == _expected_ops(["relu", "tanh"], "softmax")
    np.testing.assert_allclose(_run(exported, X), net.forward(X), rtol=1e-12, atol=1e-12)
