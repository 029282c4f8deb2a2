"""What a new user trips on at the command line (issue 18): each trap is a clear one-line
error naming the argument, the expected and the received value, or is made to work."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import gpubp
import gpubp.io.model
from gpubp import datasets
from gpubp.cli.commands import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv):
    """(status, stdout, stderr) of ``gpubp argv``, argparse's own exits included."""
    out, err = io.StringIO(), io.StringIO()
    real = sys.stderr
    sys.stderr = err
    try:
        status = main(argv, out=out)
    except SystemExit as exc:
        status = exc.code
    finally:
        sys.stderr = real
    return status, out.getvalue(), err.getvalue()


def _error(argv, code=None):
    status, _, err = _run(argv)
    assert status != 0, err
    if code is not None:
        assert status == code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _cli(*argv, **kwargs):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "gpubp", *argv], capture_output=True,
                          text=True, env=env, timeout=300, **kwargs)


# -- 1. a model file records what its inputs are ---------------------------------------------
@pytest.fixture(scope="module")
def digits_net():
    d = datasets.load("digits")  # standardised
    net = gpubp.Network([64, 16, 10], seed=0)
    net.fit(d.X_train, d.y_train, epochs=8, lr=0.5, verbose=0)
    return net, net.evaluate(d.X_test, d.y_test)["accuracy"]


def test_python_saved_model_without_inputs_is_refused_on_a_bundled_set(digits_net, tmp_path):
    net, _ = digits_net
    path = tmp_path / "m.npz"
    net.save(path)
    err = _error(["evaluate", "--model", str(path), "--data", "digits"], 1)
    assert "does not record what its inputs are" in err
    assert "inputs='standardized'" in err and "inputs='raw'" in err


def test_model_saved_as_standardized_is_evaluated_on_standardized_features(digits_net, tmp_path):
    net, accuracy = digits_net
    path = tmp_path / "m.npz"
    gpubp.io.model.save(net, path, inputs="standardized")
    status, out, err = _run(["evaluate", "--model", str(path), "--data", "digits"])
    assert status == 0, err
    assert "inputs: standardised features" in out
    assert float(re.search(r"^accuracy (\S+)", out, re.M).group(1)) == round(accuracy, 4)
    status, out, _ = _run(["export", "--model", str(path), "--onnx", str(tmp_path / "m.onnx")])
    if status == 0:  # onnx installed
        assert "raw features" not in out and "standardised features" in out


def test_model_saved_as_standardized_refuses_a_raw_file(digits_net, tmp_path):
    net, _ = digits_net
    path, csv = tmp_path / "m.npz", tmp_path / "d.csv"
    gpubp.io.model.save(net, path, inputs="standardized")
    X, y, _ = datasets.load_arrays("digits")
    np.savetxt(csv, np.c_[X[:20], y[:20]], delimiter=",")
    err = _error(["evaluate", "--model", str(path), "--data", str(csv)], 1)
    assert "trained on standardised features" in err and "stores no scaler" in err


def test_cli_saved_model_records_raw_inputs_with_its_scaler(tmp_path):
    path = tmp_path / "m.npz"
    assert _run(["train", "--data", "iris", "--epochs", "2", "--verbose", "0",
                 "--save", str(path)])[0] == 0
    header, _ = gpubp.io.model.read_npz(path)
    assert header["inputs"] == "raw" and "scaler" in header["cli"]
    status, out, _ = _run(["evaluate", "--model", str(path), "--data", "iris"])
    assert status == 0 and "inputs: raw features, standardised with the scaler" in out


def test_save_refuses_an_unknown_inputs_value(digits_net, tmp_path):
    with pytest.raises(ValueError, match="inputs must be one of"):
        gpubp.io.model.save(digits_net[0], tmp_path / "m.npz", inputs="scaled")


# -- 2. --layers -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "gradcheck"])
@pytest.mark.parametrize("layers,why", [("", "or none for no hidden layer, got ''"),
                                        ("8,,8", "got '8,,8' (width 2 of 3 is empty)"),
                                        ("8,", "(width 2 of 2 is empty)")])
def test_layers_with_an_empty_width_are_refused(command, layers, why):
    err = _error([command, "--layers", layers], 2)
    assert "argument --layers: expected comma-separated positive widths" in err and why in err


def test_layers_none_is_no_hidden_layer_and_says_so():
    status, out, err = _run(["train", "--data", "iris", "--layers", "none", "--epochs", "1",
                             "--verbose", "0"])
    assert status == 0, err
    assert "network: 4-3 (15 parameters), no hidden layer," in out and "hidden=" not in out
    status, out, _ = _run(["gradcheck", "--layers", "none"])
    assert status == 0 and "network: 6-3, no hidden layer" in out


# -- 4. evaluate on a file without labels ----------------------------------------------------
def test_evaluate_names_the_missing_label_column(tmp_path):
    model, csv = tmp_path / "m.npz", tmp_path / "new.csv"
    assert _run(["train", "--data", "iris", "--epochs", "1", "--verbose", "0",
                 "--save", str(model)])[0] == 0
    np.savetxt(csv, datasets.load("iris", scale=False).X_test, delimiter=",")
    err = _error(["evaluate", "--model", str(model), "--data", str(csv)], 1)
    assert "has no label column" in err and "4 columns are the model's 4 inputs" in err
    status, out, _ = _run(["predict", "--model", str(model), "--data", str(csv)])
    assert status == 0 and len(out.split()) == 36  # predict needs no labels


# -- 6. every argument checked before the data are loaded ------------------------------------
@pytest.fixture
def no_loading(monkeypatch):
    """Make reading any data set fail loudly: a check that comes after it shows."""
    def refuse(*args, **kwargs):
        raise AssertionError("data were loaded before the arguments were checked")

    monkeypatch.setattr(datasets, "load", refuse)
    monkeypatch.setattr(datasets, "load_file", refuse)
    monkeypatch.setattr(datasets, "load_arrays", refuse)


@pytest.mark.parametrize("argv,code,pattern", [
    (["--schedule", "foo"], 1, r"--schedule must be one of constant, step, cosine, invscaling, warmup, warmup_cosine, one_cycle, got 'foo'"),
    (["--weight-decay", "-1"], 2, r"argument --weight-decay: expected a number >= 0, got '-1'"),
    (["--weight-decay", "nan"], 2, r"argument --weight-decay: expected a number >= 0, got 'nan'"),
    (["--validation-split", "2"], 2, r"argument --validation-split: expected a number in \[0, 1\), got '2'"),
    (["--validation-split", "-0.1"], 2, r"argument --validation-split: expected a number in \[0, 1\)"),
    (["--lr", "inf"], 2, r"argument --lr: expected a positive float, got 'inf'"),
    (["--test-size", "0"], 2, r"argument --test-size: expected a number in \(0, 1\), got '0'"),
    (["--seed", "-1"], 2, r"argument --seed: expected an integer >= 0, got '-1'"),
    (["--resume", "missing.npz"], 1, r"--resume must be an existing file, got 'missing.npz' \(no such file\)"),
    (["--hidden", "swish"], 1, r"--hidden must be one of sigmoid, tanh, relu, identity, .*got 'swish'"),
    (["--dtype", "float16"], 1, r"--dtype must be one of float32, float64, got 'float16'"),
    (["--device", "tpu"], 1, r"--device must be one of cpu, cuda, auto, got 'tpu'"),
    (["--data", "missing.csv"], 1, r"--data must be one of digits, .* got 'missing.csv' \(no such"),
    (["--data", "iris", "--label-column", "3"], 1, r"--label-column applies to a data file, not to the bundled set 'iris'"),
])
def test_train_arguments_are_checked_before_loading(no_loading, argv, code, pattern):
    err = _error(["train", "--epochs", "1", "--verbose", "0", *argv], code)
    assert re.search(pattern, err), err


def test_distributed_without_mpi4py_is_refused_before_loading(no_loading, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py -> ImportError
    err = _error(["train", "--distributed", "--epochs", "1"], 1)
    assert "--distributed: distributed training needs mpi4py: pip install 'gpubp[mpi]'" in err


@pytest.mark.parametrize("argv,pattern", [
    (["evaluate", "--model", "missing.npz"], r"--model must be an existing file, got 'missing.npz'"),
    (["predict", "--model", "missing.npz"], r"--model must be an existing file, got 'missing.npz'"),
    (["export", "--model", "missing.npz", "--onnx", "x.onnx"], r"--model must be an existing file"),
    (["evaluate", "--model", ".", "--data", "iris"], r"--model must be an existing file, got '.' \(a directory\)"),
])
def test_model_path_is_checked_first(no_loading, argv, pattern):
    assert re.search(pattern, _error(argv, 1))


def test_device_of_evaluate_is_checked_before_reading_the_model(tmp_path):
    model = tmp_path / "m.npz"
    assert _run(["train", "--data", "iris", "--epochs", "1", "--verbose", "0",
                 "--save", str(model)])[0] == 0
    err = _error(["evaluate", "--model", str(model), "--device", "tpu"], 1)
    assert "--device must be one of cpu, cuda, auto, got 'tpu'" in err and "header" not in err


def test_broken_pipe_ends_quietly(tmp_path):
    model = tmp_path / "m.npz"
    assert _run(["train", "--data", "digits", "--epochs", "1", "--verbose", "0",
                 "--save", str(model)])[0] == 0
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "gpubp", "predict", "--model", str(model),
                             "--data", "digits"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line is written (| head -0)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 141
    assert err == ""


# -- 8. --version and info -------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"gpubp {gpubp.__version__}"


def test_info_lists_the_optional_packages():
    status, out, _ = _run(["info"])
    assert status == 0
    for name in ("pyarrow", "numba-cuda", "onnx", "mpi4py"):
        assert re.search(rf"^{name} (\d\S*|not installed)$", out, re.M), out


# -- 7. gpubp.sklearn.estimators without scikit-learn ---------------------------------------------------
def test_gpubp_sklearn_without_scikit_learn_says_what_to_install():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import gpubp.sklearn.estimators\n"
            "except ImportError as exc:\n    print(type(exc).__name__, exc)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError gpubp.sklearn needs scikit-learn")
    assert "pip install 'gpubp[sklearn]'" in result.stdout
