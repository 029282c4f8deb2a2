"""The record of a training run, as Keras' ``History``: one list per figure, one entry per epoch."""


class History:
    """Per-epoch figures of :meth:`gpubp.Network.fit`.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` (mean training cost of the epoch) and, where they apply,
        ``"accuracy"``, ``"val_loss"``, ``"val_accuracy"``, ``"grad_norm"`` (full-data
        gradient norm, recorded when ``tol`` is set) and ``"lr"``.
    epoch : list of int
        Epoch numbers (0-based) the figures belong to.
    stop_reason : str or None
        Why training stopped early (``tol`` reached, early stopping), or None.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.stop_reason = None

    def record(self, epoch, **figures):
        self.epoch.append(epoch)
        for key, value in figures.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self)}, last={last})"
