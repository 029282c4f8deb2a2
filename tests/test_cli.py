"""The command line: every subcommand, CSV data with string labels, one-line errors."""

import re

import numpy as np
import pytest

from gpubp.cli.commands import main


def _accuracy(text, key="test accuracy"):
    return float(re.search(rf"{key} (\d\.\d+)", text).group(1))


@pytest.fixture
def animals_csv(tmp_path):
    """Two separable blobs labelled by name, with a header and the label column first."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(-2, 1, (40, 3)), rng.normal(2, 1, (40, 3))])
    names = np.array(["cat"] * 40 + ["dog"] * 40)
    path = tmp_path / "animals.csv"
    lines = ["species,a,b,c"] + [f"{n},{x[0]:.6f},{x[1]:.6f},{x[2]:.6f}" for n, x in zip(names, X)]
    path.write_text("\n".join(lines) + "\n")
    return path, X, names


def test_train_options_save_evaluate_predict(tmp_path, capsys):
    model, curves = tmp_path / "model.npz", tmp_path / "curves.png"
    assert main(["train", "--data", "iris", "--layers", "16,8", "--hidden", "relu",
                 "--optimizer", "adam", "--lr", "1e-2", "--epochs", "40", "--batch-size", "16",
                 "--device", "cpu", "--save", str(model), "--plot", str(curves),
                 "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "network: 4-16-8-3" in out and "device=cpu" in out and "optimizer: adam, lr 0.01" in out
    accuracy = _accuracy(out)
    assert accuracy >= 0.9
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["evaluate", "--model", str(model), "--data", "iris"]) == 0
    assert _accuracy(capsys.readouterr().out, "accuracy") == accuracy
    assert main(["predict", "--model", str(model), "--data", "iris"]) == 0
    labels = capsys.readouterr().out.split()
    assert len(labels) == 36 and set(labels) <= {"setosa", "versicolor", "virginica"}


def test_csv_with_string_labels(animals_csv, tmp_path, capsys):
    path, X, names = animals_csv
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(path), "--label-column", "species", "--epochs", "20",
                 "--save", str(model), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "data: animals.csv, 60 train / 20 test examples, 3 features, 2 classes" in out
    assert _accuracy(out) == 1.0
    assert main(["evaluate", "--model", str(model), "--data", str(path),
                 "--label-column", "species"]) == 0
    out = capsys.readouterr().out
    assert "examples 80" in out and _accuracy(out, "accuracy") == 1.0
    features = tmp_path / "features.csv"  # features only, raw (unscaled) values
    np.savetxt(features, X, delimiter=",", header="a,b,c", comments="")
    preds = tmp_path / "preds.txt"
    assert main(["predict", "--model", str(model), "--data", str(features),
                 "--output", str(preds)]) == 0
    assert preds.read_text().split() == list(names)


def test_early_stopping_and_checkpoint_resume(tmp_path, capsys):
    ckpt = tmp_path / "run.npz"
    args = ["train", "--data", "wine", "--epochs", "6", "--optimizer", "nesterov", "--lr", "0.05",
            "--schedule", "cosine", "--verbose", "0", "--checkpoint", str(ckpt)]
    assert main(args) == 0
    full = capsys.readouterr().out
    assert main(args + ["--resume", str(ckpt)]) == 0  # a finished run: nothing changes
    assert _accuracy(capsys.readouterr().out) == _accuracy(full)
    assert main(["train", "--data", "digits", "--early-stopping", "2", "--epochs", "50",
                 "--lr", "2.0", "--verbose", "0"]) == 0
    assert "stopped: early stopping: val_loss did not improve for 2 epochs" in capsys.readouterr().out


def test_gradcheck_and_info(capsys):
    assert main(["gradcheck", "--layers", "4", "--hidden", "tanh"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"layer 2: worst error \d\.\d\de-\d\d x tolerance", out) and "ok:" in out
    assert main(["gradcheck", "--output", "identity", "--loss", "mse", "--atol", "0",
                 "--rtol", "1e-30"]) == 1
    assert "gradient check failed: worst error" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["gradcheck", "--atol", "-1"])
    assert exc.value.code == 2
    assert "gpubp gradcheck: error: argument --atol: expected a number >= 0, got '-1'" \
        in capsys.readouterr().err
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpubp ") and "cuda usable:" in out and "cpu backend:" in out


def test_bench_calls_run_bench(monkeypatch, capsys):
    calls = {}

    def fake_run_bench(cases=None, backends=None, peers=True, repeats=5, file=None,
                       inference=False, samples_per_epoch=None, processes=3):
        calls.update(cases=cases, backends=backends, peers=peers, repeats=repeats,
                     inference=inference, samples_per_epoch=samples_per_epoch,
                     processes=processes)
        print("table", file=file)
        return []

    import gpubp.bench.compare

    monkeypatch.setattr(gpubp.bench.compare, "run_bench", fake_run_bench)
    assert main(["bench", "--case", "64-32-10@16", "--backend", "reference", "--no-peers",
                 "--repeats", "2", "--samples-per-epoch", "256", "--inference",
                 "--processes", "3"]) == 0
    assert calls == {"cases": ["64-32-10@16"], "backends": ["reference"], "peers": False, "repeats": 2,
                         "inference": True, "samples_per_epoch": 256, "processes": 3}
    assert capsys.readouterr().out == "table\n"


@pytest.mark.parametrize("argv,reduction", [([], "shared"), (["--fused"], "allreduce"),
                                            (["--reduction", "iallreduce"], "iallreduce")])
def test_bench_scaling_passes_the_reduction(monkeypatch, argv, reduction):
    import gpubp.bench.scaling

    calls = []
    monkeypatch.setattr(gpubp.bench.scaling, "run_scaling",
                        lambda **kwargs: calls.append(kwargs) or [])
    assert main(["bench", "--scaling", "--repeats", "2"] + argv) == 0
    assert calls[0]["reduction"] == reduction and calls[0]["repeats"] == 2


@pytest.mark.parametrize("argv,code,pattern", [
    (["train", "--data", "nope"], 1, r"^gpubp train: error: --data must be one of .*got 'nope'"),
    (["train", "--hidden", "swish", "--epochs", "1"], 1, r"^gpubp train: error: --hidden must be one of"),
    (["train", "--optimizer", "adagrad"], 1, r"--optimizer must be one of sgd, momentum, nesterov, adam, adamw, rmsprop, got 'adagrad'"),
    (["train", "--warmup", "5", "--schedule", "step"], 1, r"--warmup applies to --schedule constant or warmup or cosine or warmup_cosine, got --schedule step"),
    (["train", "--clip-norm", "1", "--clip-value", "1"], 1, r"--clip-norm and --clip-value are exclusive, got both"),
    (["train", "--clip-norm", "-1"], 2, r"argument --clip-norm: expected a positive float, got '-1'"),
    (["train", "--warmup", "0"], 2, r"argument --warmup: expected a positive int, got '0'"),
    (["train", "--layers", "3,x"], 2, r"^gpubp train: error: argument --layers: .*got '3,x'"),
    (["train", "--epochs", "0"], 2, r"argument --epochs: expected a positive int, got '0'"),
    (["evaluate", "--model", "missing.npz"], 1, r"^gpubp evaluate: error: .*missing.npz"),
    (["train", "--resume", "missing.npz", "--epochs", "1"], 1, r"^gpubp train: error: .*missing.npz"),
    (["frobnicate"], 2, r"^gpubp: error: argument command: invalid choice"),
])
def test_errors_are_one_line_with_nonzero_exit(argv, code, pattern, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == code
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(pattern, err), err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    status = main(["train", "--data", "iris", "--epochs", "1", "--verbose", "0", "--plot",
                   str(tmp_path / "c.png")])
    assert status == 1
    assert "pip install 'gpubp[plot]'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,shown", [
    (["--optimizer", "adamw", "--clip-norm", "1.5", "--warmup", "4", "--schedule", "cosine"],
     "optimizer: adamw, lr 0.001, schedule WarmupCosine(warmup_steps=4, min_lr=0.0, "
     "start_factor=0.3333333333333333), clip norm 1.5"),
    (["--optimizer", "rmsprop", "--clip-value", "0.1", "--warmup", "3"],
     "optimizer: rmsprop, lr 0.01, schedule LinearWarmup(warmup_steps=3, "
     "start_factor=0.3333333333333333), clip value 0.1"),
])
def test_train_takes_the_new_optimizers_clipping_and_warmup(argv, shown, capsys, monkeypatch):
    import gpubp

    seen = {}
    fit = gpubp.Network.fit

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(gpubp.Network, "fit", spy)
    assert main(["train", "--data", "iris", "--epochs", "2", "--verbose", "0",
                 "--device", "cpu"] + argv) == 0
    assert shown in capsys.readouterr().out
    assert seen["optimizer"] == argv[1]
    assert (seen["clip_norm"], seen["clip_value"]) in ((1.5, None), (None, 0.1))
    assert seen["schedule"].per_step
