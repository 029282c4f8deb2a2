"""Training curves with matplotlib's object API (``Figure``), never the pyplot state machine.

matplotlib is an optional dependency (``pip install "gpubp[plot]"``); it is imported only
when a plot is asked for, and its absence is a clear ``ImportError``.
"""

import os


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"plotting needs matplotlib, which is not installed ({exc}); "
            f"install it with: pip install 'gpubp[plot]'"
        ) from None
    return Figure


def plot_history(history, path=None, title=None):
    """Loss (left) and, when recorded, accuracy (right) per epoch, train and validation.

    Parameters
    ----------
    history : History
    path : str or os.PathLike or None
        File to write (format from the suffix, PNG by default); None writes nothing.
    title : str or None

    Returns
    -------
    matplotlib.figure.Figure
    """
    if len(history) == 0:
        raise ValueError("history must hold at least one epoch to plot, got an empty History")
    Figure = _figure_class()
    panels = [("loss", "loss")]
    if "accuracy" in history or "val_accuracy" in history:
        panels.append(("accuracy", "accuracy"))
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    epochs = [e + 1 for e in history.epoch]
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for prefix, name, style in (("", "train", "-"), ("val_", "validation", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, marker="o", markersize=3,
                        label=name)
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch + 1, color="grey", linewidth=0.8, linestyle=":",
                       label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig
