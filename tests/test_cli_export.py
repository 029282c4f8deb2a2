"""gpubp export (ONNX with the scaler inside), and output paths checked before any work."""

import json
import re

import numpy as np
import pytest

from gpubp.cli.commands import main

ort = pytest.importorskip("onnxruntime")


def test_export_runs_on_raw_features_like_predict(tmp_path, capsys):
    model, exported = tmp_path / "m.npz", tmp_path / "m.onnx"
    assert main(["train", "--data", "wine", "--epochs", "5", "--save", str(model),
                 "--verbose", "0"]) == 0
    assert main(["export", "--model", str(model), "--onnx", str(exported)]) == 0
    assert f"to {exported} (ONNX opset" in capsys.readouterr().out
    from gpubp import datasets

    X, y, classes = datasets.load_arrays("wine")
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    probabilities = session.run(["output"], {"X": X.astype(np.float32)})[0]
    csv = tmp_path / "wine.csv"
    np.savetxt(csv, X, delimiter=",")
    assert main(["predict", "--model", str(model), "--data", str(csv)]) == 0
    predicted = capsys.readouterr().out.split()
    names = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    assert [names[i] for i in probabilities.argmax(axis=1)] == predicted


@pytest.mark.parametrize("option,value,pattern", [
    ("--save", "missing-dir/m.npz", r"--save must be a path in an existing directory, got "
                                    r"'.*missing-dir/m.npz'"),
    ("--checkpoint", "missing-dir/c.npz", r"--checkpoint must be a path in an existing "
                                          r"directory, got '.*missing-dir/c.npz'"),
    ("--plot", "missing-dir/p.png", r"--plot must be a path in an existing directory"),
    ("--plot", "curves.xyz", r"--plot must end in a format matplotlib writes .*got "
                             r"'.*curves.xyz'"),
    ("--save", ".", r"--save must be a file path, got '.*', which is a directory"),
])
def test_train_checks_output_paths_before_training(tmp_path, capsys, monkeypatch, option,
                                                  value, pattern):
    import gpubp
    from gpubp import datasets

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr(gpubp.Network, "fit", no_work)
    monkeypatch.setattr(datasets, "load", no_work)
    value = value if value == "." else str(tmp_path / value)
    assert main(["train", "--data", "wine", "--epochs", "10000", option, value]) == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert ".gpubp-" not in err and "tmp" not in err.replace(str(tmp_path), "")


def test_export_and_predict_check_their_output_paths(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "--data", "iris", "--epochs", "1", "--save", str(model),
                 "--verbose", "0"]) == 0
    capsys.readouterr()
    assert main(["export", "--model", str(model), "--onnx", str(tmp_path / "no" / "m.onnx")]) == 1
    assert "--onnx must be a path in an existing directory" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--data", "iris",
                 "--output", str(tmp_path / "no" / "p.txt")]) == 1
    assert "--output must be a path in an existing directory" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "absent.npz"),
                 "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "absent.npz" in capsys.readouterr().err


def test_train_plot_draws_the_gradient_flow(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    curves = tmp_path / "c.png"
    assert main(["train", "--data", "iris", "--layers", "8,8", "--epochs", "3",
                 "--plot", str(curves), "--verbose", "0"]) == 0
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
