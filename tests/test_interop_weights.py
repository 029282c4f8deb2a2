"""Weights in and out: safetensors model files, PyTorch nn.Sequential, scikit-learn's MLPs,
and the summary table."""

import json
import os
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch

import gpubp
from gpubp import activations
from gpubp.io import model as io


@pytest.fixture
def net():
    return gpubp.Network([5, 4, 3, 2], hidden=["relu", "tanh"], output="sigmoid",
                         dtype="float64", seed=3)


# -- safetensors --------------------------------------------------------------------------

def test_safetensors_round_trip(tmp_path, net):
    path = tmp_path / "m.safetensors"
    net.save(path)
    loaded = gpubp.load(path)
    assert (loaded.sizes, loaded.hidden, loaded.output, loaded.loss_name, loaded.dtype) == \
        (net.sizes, net.hidden, net.output, net.loss_name, net.dtype)
    X = np.random.default_rng(0).normal(size=(7, 5))
    np.testing.assert_array_equal(net.forward(X), loaded.forward(X))
    # a real safetensors file, readable by safetensors itself, header in the metadata
    with safetensors.safe_open(path, framework="numpy") as f:
        header = json.loads(f.metadata()["gpubp"])
        assert sorted(f.keys()) == ["W0", "W1", "W2", "b0", "b1", "b2"]
        np.testing.assert_array_equal(f.get_tensor("W1"), net.get_params()[0][1])
    assert header["sizes"] == [5, 4, 3, 2] and header["format"] == "gpubp"
    assert not (tmp_path / "m.safetensors").read_bytes().startswith(b"PK")  # not a zip/npz


def test_safetensors_save_is_atomic(tmp_path, net, monkeypatch):
    path = tmp_path / "m.safetensors"
    net.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        gpubp.Network([5, 2], seed=9).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.safetensors"]


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "torch.safetensors"
    safetensors.numpy.save_file({"0.weight": np.ones((2, 3), np.float32)}, str(path))
    with pytest.raises(ValueError, match="not a gpubp model file.*from_torch"):
        gpubp.load(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "huge_header", "empty"])
def test_corrupt_safetensors_is_refused(tmp_path, net, damage):
    path = tmp_path / "m.safetensors"
    net.save(path)
    data = path.read_bytes()
    data = {"truncate": data[:len(data) - 40], "garbage": b"\x00" * 64,
            "huge_header": struct.pack("<Q", 2 ** 40) + data[8:], "empty": b""}[damage]
    path.write_bytes(data)
    with pytest.raises(ValueError, match="m.safetensors"):
        gpubp.load(path)


def test_safetensors_with_shapes_not_fitting_its_header_is_refused(tmp_path, net):
    header = io.header_of(net)
    arrays = io.parameter_arrays(net)
    arrays["W1"] = np.zeros((3, 3))
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors.numpy.save(arrays, metadata={"gpubp": json.dumps(header)}))
    with pytest.raises(ValueError, match=r"W\[1\] must have shape \(4, 3\)"):
        gpubp.load(path)
    path.write_bytes(safetensors.numpy.save(io.parameter_arrays(net),
                                            metadata={"gpubp": "{not json"}))
    with pytest.raises(ValueError, match="corrupt header"):
        gpubp.load(path)


# -- PyTorch -----------------------------------------------------------------------------

def test_to_torch_outputs_equal_and_back(net):
    X = np.random.default_rng(1).normal(size=(9, 5))
    module = net.to_torch()
    assert [type(m).__name__ for m in module] == ["Linear", "ReLU", "Linear", "Tanh",
                                                  "Linear", "Sigmoid"]
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, net.forward(X), rtol=0, atol=1e-14)
    back = gpubp.from_torch(module)
    assert (back.sizes, back.hidden, back.output, back.loss_name, back.dtype) == \
        (net.sizes, net.hidden, net.output, net.loss_name, net.dtype)
    for a, b in zip(sum(net.get_params(), []), sum(back.get_params(), [])):
        np.testing.assert_array_equal(a, b)


def test_from_torch_classifier_on_logits_matches_torch():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Sigmoid(),
                                 torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    net = gpubp.from_torch(module, output="softmax")
    assert net.hidden == ["sigmoid", "identity"] and net.loss_name == "cross_entropy"
    assert net.dtype == np.float32
    X = np.random.default_rng(2).normal(size=(10, 6)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(net.forward(X), expected, rtol=1e-5, atol=1e-6)


def test_every_torch_row_of_the_table_converts_both_ways():
    X = np.random.default_rng(3).normal(size=(4, 3))
    for row in activations.ACTIVATIONS.values():
        if row.torch is None or not (row.hidden or row.output):
            continue
        hidden = row.name if row.hidden else "tanh"
        output = row.name if row.output else "identity"
        net = gpubp.Network([3, 4, 2], hidden=hidden, output=output, dtype="float64", seed=0)
        module = net.to_torch()
        with torch.no_grad():
            np.testing.assert_allclose(module(torch.from_numpy(X)).numpy(), net.forward(X),
                                       atol=1e-13, err_msg=row.name)
        back = gpubp.from_torch(module)
        assert (back.hidden, back.output) == (net.hidden, net.output), row.name


def test_from_torch_refuses_what_it_cannot_read():
    nn = torch.nn
    with pytest.raises(ValueError, match="from_torch.*got Dropout"):
        gpubp.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Linear(2, 1)))
    with pytest.raises(TypeError, match="module must be a torch.nn.Sequential"):
        gpubp.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="in_features=3 follows one of out_features=2"):
        gpubp.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="two activations"):
        gpubp.from_torch(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Tanh(), nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="must start with a Linear"):
        gpubp.from_torch(nn.Sequential(nn.ReLU(), nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="dim=-1"):
        gpubp.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Softmax(dim=0)))
    with pytest.raises(ValueError, match="output='softmax', but module ends in 'sigmoid'"):
        gpubp.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()), output="softmax")
    with pytest.raises(ValueError, match="float32 or float64"):
        gpubp.from_torch(nn.Sequential(nn.Linear(2, 2)).half())
    exp_net = gpubp.Network([2, 1], output="exp")
    with pytest.raises(ValueError, match="'exp' has no torch.nn module"):
        exp_net.to_torch()


def test_from_torch_bias_free_linear_gets_zero_biases():
    module = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False, dtype=torch.float64))
    net = gpubp.from_torch(module)
    np.testing.assert_array_equal(net.get_params()[1][0], np.zeros(2))
    X = np.random.default_rng(4).normal(size=(5, 3))
    with torch.no_grad():
        np.testing.assert_allclose(net.forward(X), module(torch.from_numpy(X)).numpy(),
                                   atol=1e-14)


# -- summary -------------------------------------------------------------------------------

def test_summary_table(net):
    lines = []
    net.summary(print_fn=lines.append)
    text = lines[0].splitlines()
    assert text[0] == "Network 5 -> 4 -> 3 -> 2"
    rows = [line.split() for line in text if line.startswith("dense_")]
    assert rows == [["dense_1", "(None,", "4)", "relu", "24", "-"],
                    ["dense_2", "(None,", "3)", "tanh", "15", "-"],
                    ["dense_3", "(output)", "(None,", "2)", "sigmoid", "8", "-"]]
    assert "Total params: 47 (376 bytes of float64)" in text
    assert text[-1].split() == ["Loss:", "binary_cross_entropy", "dtype:", "float64",
                                "device:", "cpu", "backend:", "cpu"]
    assert "\n" not in repr(net) and len(repr(net)) < 200  # print(net) stays short
    with pytest.raises(TypeError, match="print_fn must be callable"):
        net.summary(print_fn="stdout")


def test_summary_prints(net, capsys):
    net.summary()
    assert "Total params: 47" in capsys.readouterr().out


# -- scikit-learn's own estimators ---------------------------------------------------------

def _quiet_fit(est, X, y):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of a short run
        return est.fit(X, y)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor"])
def test_estimators_round_trip_with_scikit_learn(kind):
    from sklearn import neural_network as sk_nn

    from gpubp.sklearn import MLPClassifier, MLPRegressor, from_sklearn, to_sklearn

    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 4))
    y = {"binary": (X[:, 0] > 0).astype(int), "multiclass": np.argmax(X[:, :3], axis=1),
         "regressor": X @ [1.0, -2.0, 0.5, 0.0]}[kind]
    ours = (MLPRegressor if kind == "regressor" else MLPClassifier)(
        hidden_layer_sizes=(5, 3), activation="tanh", max_iter=5, random_state=0,
        dtype="float64")
    _quiet_fit(ours, X, y)
    theirs = to_sklearn(ours)
    assert type(theirs).__module__.startswith("sklearn.neural_network")
    np.testing.assert_array_equal(theirs.predict(X), ours.predict(X)) if kind != "regressor" \
        else np.testing.assert_allclose(theirs.predict(X), ours.predict(X), rtol=1e-12)
    if kind != "regressor":
        np.testing.assert_allclose(theirs.predict_proba(X), ours.predict_proba(X), rtol=1e-12)
    # scikit-learn trains its own copy on, then hands it back
    theirs.set_params(warm_start=True, max_iter=3)
    _quiet_fit(theirs, X, y)
    back = from_sklearn(theirs)
    assert isinstance(back, (MLPClassifier, MLPRegressor)) and back.device == "cpu"
    for a, b in zip(theirs.coefs_ + theirs.intercepts_, back.coefs_ + back.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(back.predict_proba(X) if kind != "regressor" else back.predict(X),
                               theirs.predict_proba(X) if kind != "regressor" else
                               theirs.predict(X), rtol=1e-12)
    assert back.coefs_[0] is not theirs.coefs_[0]  # copies, not shared
    with pytest.raises(TypeError, match="scikit-learn MLPClassifier or MLPRegressor"):
        from_sklearn(ours)
    with pytest.raises(ValueError, match="fitted"):
        to_sklearn(MLPClassifier())
    assert isinstance(to_sklearn(back), (sk_nn.MLPClassifier, sk_nn.MLPRegressor))


def test_command_line_saves_and_reads_safetensors(tmp_path, capsys):
    from gpubp.cli import main

    path = tmp_path / "m.safetensors"
    assert main(["train", "--data", "iris", "--epochs", "2", "--verbose", "0",
                 "--save", str(path)]) == 0
    trained = capsys.readouterr().out
    assert main(["evaluate", "--model", str(path), "--data", "iris"]) == 0
    evaluated = capsys.readouterr().out
    # the same test figures from the file as at the end of training (class names and the
    # scaler rode along in the metadata)
    loss = [line.split()[-1] for line in trained.splitlines() if line.startswith("test loss")]
    assert loss and f"loss {loss[0]}" in evaluated
    with safetensors.safe_open(path, framework="numpy") as f:
        assert "cli" in json.loads(f.metadata()["gpubp"])


def test_mutated_safetensors_files_load_or_raise_value_error(tmp_path, net):
    """Every byte of the index flipped in turn, and random bytes anywhere: a clean
    ValueError or a network, never another exception."""
    path = tmp_path / "m.safetensors"
    net.save(path)
    data = bytearray(path.read_bytes())
    header_end = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    rng = np.random.default_rng(0)
    positions = list(range(0, header_end, 3)) + list(rng.integers(0, len(data), 40))
    outcomes = {"loaded": 0, "refused": 0}
    for i in positions:
        mutated = bytearray(data)
        mutated[i] = (mutated[i] + 1 + int(rng.integers(0, 255))) % 256
        path.write_bytes(bytes(mutated))
        try:
            gpubp.load(path)
            outcomes["loaded"] += 1
        except ValueError as exc:
            assert "m.safetensors" in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > len(positions) // 2, outcomes
