"""Training curves with matplotlib's object API (``Figure``), never the pyplot state machine.

matplotlib is an optional dependency (``pip install "gpubp[plot]"``); it is imported only
when a plot is asked for, and its absence is a clear ``ImportError``.
"""

import os

from gpubp.optional import require


def _figure_class():
    return require("matplotlib.figure", "plot", "plotting").Figure


def check_plot_path(path, name="path"):
    """Raise unless matplotlib is installed and can write ``path``'s format (by suffix)."""
    Figure = _figure_class()
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    formats = Figure().canvas.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise ValueError(f"{name} must end in a format matplotlib writes "
                         f"({', '.join(sorted(formats))}), got {os.fspath(path)!r}")


def plot_history(history, path=None, title=None):
    """Loss, accuracy and gradient flow per epoch, each panel drawn when it was recorded.

    - loss (train and validation);
    - accuracy (train and validation), for classifiers;
    - gradient flow, when ``fit(gradient_flow=True)`` recorded it: ``‖∂C/∂W^l‖`` (solid)
      and the mean ``|δ^l|`` (dashed) of each layer l, on a log scale, so that gradients
      vanishing towards the input layers show as lines spread over decades.

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
    layers = gradient_flow_layers(history)
    n = len(panels) + bool(layers)
    fig = Figure(figsize=(5.5 * n, 4), layout="constrained")
    epochs = [e + 1 for e in history.epoch]
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        for prefix, name, style in (("", "train", "-"), ("val_", "validation", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, marker="o", markersize=3,
                        label=name)
        _mark_best(ax, history)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if layers:
        _plot_gradient_flow(fig.add_subplot(1, n, n), history, epochs, layers)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig


def gradient_flow_layers(history):
    """Layer numbers l (1-based) whose ``grad_norm_W{l}`` the history holds."""
    layers = []
    while f"grad_norm_W{len(layers) + 1}" in history:
        layers.append(len(layers) + 1)
    return layers


def _mark_best(ax, history):
    if history.best_epoch is not None:
        ax.axvline(history.best_epoch + 1, color="grey", linewidth=0.8, linestyle=":",
                   label="best epoch")


def _plot_gradient_flow(ax, history, epochs, layers):
    """Per layer: ‖∂C/∂W^l‖ solid, mean |δ^l| dashed, same colour; log y axis."""
    from matplotlib import colormaps  # optional: matplotlib (gpubp[plot])

    colours = colormaps["viridis"]
    for l in layers:
        colour = colours((l - 1) / max(1, len(layers) - 1))
        # a gradient exactly 0 (dead relu layer) has no logarithm: drawn as a gap
        norms = [v if v > 0 else float("nan") for v in history[f"grad_norm_W{l}"]]
        ax.plot(epochs, norms, "-", color=colour, label=rf"$\|\partial C/\partial W^{{{l}}}\|$")
        if f"mean_abs_delta{l}" in history:
            deltas = [v if v > 0 else float("nan") for v in history[f"mean_abs_delta{l}"]]
            ax.plot(epochs, deltas, "--", color=colour, linewidth=1)
    ax.plot([], [], "k--", linewidth=1, label=r"mean $|\delta^l|$ (dashed)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient magnitude (log scale)")
    ax.set_title("gradient flow per layer (l = 1 is next to the input)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(layers) > 5 else 1)
