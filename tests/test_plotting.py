"""History.plot: loss and accuracy curves through matplotlib.figure.Figure, no pyplot."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import gpubp
from gpubp.training.history import History


def _history(with_val=True, accuracy=True):
    h = History()
    for e in range(4):
        figs = {"loss": 1.0 / (e + 1)}
        if accuracy:
            figs["accuracy"] = 0.5 + 0.1 * e
        if with_val:
            figs["val_loss"] = 1.2 / (e + 1)
            if accuracy:
                figs["val_accuracy"] = 0.45 + 0.1 * e
        h.record(e, **figs)
    return h


def test_plot_writes_a_png_with_train_and_validation_curves(tmp_path):
    path = tmp_path / "curves.png"
    h = _history()
    h.best_epoch = 2
    fig = h.plot(path, title="run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "accuracy"
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert set(lines) == {"train", "validation", "best epoch"}
    np.testing.assert_allclose(lines["train"].get_ydata(), h["loss"])
    np.testing.assert_array_equal(lines["validation"].get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(acc_ax.get_lines()[1].get_ydata(), h["val_accuracy"])


def test_pyplot_is_never_imported(tmp_path):
    import subprocess

    code = ("import sys; from gpubp.training.history import History; h = History(); h.record(0, loss=1.0); "
            f"h.plot({str(tmp_path / 'c.png')!r}); assert 'matplotlib.pyplot' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_regressor_history_has_only_the_loss_panel():
    fig = _history(with_val=False, accuracy=False).plot()
    assert len(fig.axes) == 1 and [l.get_label() for l in fig.axes[0].get_lines()] == ["train"]


def test_plot_from_a_real_fit(tmp_path):
    from gpubp import datasets

    d = datasets.load("iris")
    net = gpubp.Network([4, 5, 3], seed=0, backend="reference")
    hist = net.fit(d.X_train, d.y_train, epochs=3, validation_split=0.2, verbose=0)
    hist.plot(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_empty_history_and_missing_matplotlib(monkeypatch):
    with pytest.raises(ValueError, match="history must hold at least one epoch"):
        History().plot()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"plotting needs matplotlib.*pip install 'gpubp\[plot\]'"):
        _history().plot()
