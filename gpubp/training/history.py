"""The record of a training run, as Keras' ``History``: one list per figure, one entry per epoch."""


class History:
    """Per-epoch figures of :meth:`gpubp.Network.fit`.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` (mean training cost of the epoch), ``"lr"`` (the epoch's learning
        rate) and, where they apply, ``"accuracy"``, ``"val_loss"``, ``"val_accuracy"``
        and ``"grad_norm"`` (full-data gradient norm, recorded when ``tol`` is set);
        with ``fit(gradient_flow=True)``, ``"grad_norm_W{l}"`` (``‖∂C/∂W^l‖``) and
        ``"mean_abs_delta{l}"`` (mean ``|δ^l|``) for each layer ``l = 1..L``.
    epoch : list of int
        Epoch numbers (0-based) the figures belong to.
    stop_reason : str or None
        Why training stopped early (``tol`` reached, early stopping), or None.
    best_epoch : int or None
        The epoch whose parameters early stopping restored, or None.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.stop_reason = None
        self.best_epoch = None

    def record(self, epoch, **figures):
        """Append the figures of ``epoch`` (keyword arguments, each a number)."""
        self.epoch.append(int(epoch))
        for key, value in figures.items():
            self.history.setdefault(key, []).append(float(value))

    # A read-only mapping of figure names to lists, as ``history.history``: ``hist["loss"]``,
    # ``keys()``, ``values()``, ``items()``, ``get()``, iteration over the names,
    # ``dict(hist)``. ``len(hist)`` is the number of epochs (not of figures), as it always was.
    def __getitem__(self, key):
        try:
            return self.history[key]
        except KeyError:
            raise KeyError(f"{key!r} was not recorded; recorded: {list(self.history)}") from None

    def __contains__(self, key):
        return key in self.history

    def __iter__(self):
        return iter(self.history)

    def keys(self):
        return self.history.keys()

    def values(self):
        return self.history.values()

    def items(self):
        return self.history.items()

    def get(self, key, default=None):
        return self.history.get(key, default)

    def __len__(self):
        """The number of epochs recorded."""
        return len(self.epoch)

    def __repr__(self):
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self)}, last={last})"

    def to_dict(self):
        """A JSON-able dict that :meth:`from_dict` turns back into an equal History."""
        return {"history": {k: list(v) for k, v in self.history.items()},
                "epoch": list(self.epoch), "stop_reason": self.stop_reason,
                "best_epoch": self.best_epoch}

    @classmethod
    def from_dict(cls, data):
        h = cls()
        h.history = {str(k): [float(x) for x in v] for k, v in data["history"].items()}
        h.epoch = [int(e) for e in data["epoch"]]
        h.stop_reason = data.get("stop_reason")
        h.best_epoch = data.get("best_epoch")
        return h

    def plot(self, path=None, title=None):
        """Loss and accuracy curves (train and validation) and, when recorded, the per-layer
        gradient flow on a log scale, as a matplotlib figure.

        Uses :class:`matplotlib.figure.Figure` directly (no pyplot global state).

        Parameters
        ----------
        path : str or os.PathLike or None
            Where to write the figure (PNG, or any format matplotlib infers from the
            suffix); None only returns it.
        title : str or None

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        ImportError
            When matplotlib is not installed (``pip install "gpubp[plot]"``).
        """
        from gpubp.training.plotting import plot_history  # matplotlib behind it is optional (gpubp[plot])

        return plot_history(self, path, title)
