"""Callbacks: code that runs around the epochs of :meth:`gpubp.Network.fit`.

A callback subclasses :class:`Callback` and overrides the hooks it needs. Each hook gets
the :class:`Run` in progress (the network, the optimizer, the history), and may stop the
training with ``run.stop(reason)``. Callbacks with state that matters to the outcome
(:class:`EarlyStopping`, :class:`ReduceLROnPlateau`) export it through ``state_dict``/``load_state_dict`` so that a
checkpointed run resumes exactly.
"""

import numbers

import numpy as np

from gpubp.data.validation import check_positive


class Run:
    """What a callback can see of the training in progress.

    Attributes
    ----------
    net : Network
    optimizer : Optimizer
    history : History
    epochs : int
        Planned number of epochs.
    stop_training : bool
        Set by :meth:`stop`; the loop ends after the current epoch.
    """

    def __init__(self, net, optimizer, history, epochs):
        self.net = net
        self.optimizer = optimizer
        self.history = history
        self.epochs = epochs
        self.stop_training = False

    def stop(self, reason):
        """End the training after this epoch, recording ``reason`` in the history."""
        self.stop_training = True
        self.history.stop_reason = reason


class Callback:
    """Base class; every hook does nothing by default.

    ``batch_every`` (int, default 1): how many batches between two calls of
    :meth:`on_batch_end`, for subclasses that override it (:mod:`gpubp.training.batches`).
    """

    batch_every = 1

    def on_train_begin(self, run):
        """Before the first epoch (also when resuming)."""

    def on_epoch_begin(self, run, epoch):
        """Before 0-based ``epoch``."""

    def on_batch_end(self, run, batch, logs):
        """After 0-based ``batch`` of the epoch, every ``batch_every`` batches (and only for
        callbacks that override it: the compiled epoch then runs in chunks between calls).

        ``logs``: ``loss`` (mean cost of the batches since the last call, without an
        optimizer's penalty), ``accuracy`` (classifiers), ``size`` (their rows), ``step``
        (optimizer steps so far). ``run.stop(reason)`` ends the run after this batch; the
        epoch's figures then cover the rows trained. Not available in distributed runs.
        """

    def on_epoch_end(self, run, epoch, logs):
        """After ``epoch``; ``logs`` holds the figures just recorded (``loss``, ``val_loss``...)."""

    def on_train_end(self, run):
        """After the last epoch, or after a callback stopped the run."""

    def state_dict(self):
        """State needed to resume exactly: ``(json_dict, {name: ndarray})``, or None."""
        return

    def load_state_dict(self, config, arrays):
        """Restore what :meth:`state_dict` returned."""


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda run, e, logs: ...)``."""

    def __init__(self, on_train_begin=None, on_epoch_begin=None, on_epoch_end=None,
                 on_train_end=None, on_batch_end=None, batch_every=1):
        self.batch_every = batch_every  # checked with the run's callbacks (training.batches)
        for name, fn in (("on_train_begin", on_train_begin), ("on_epoch_begin", on_epoch_begin),
                         ("on_epoch_end", on_epoch_end), ("on_train_end", on_train_end),
                         ("on_batch_end", on_batch_end)):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name} must be callable or None, got {fn!r}")
                setattr(self, name, fn)


class EarlyStopping(Callback):
    """Stop when a monitored figure has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the history: ``"val_loss"``, ``"val_accuracy"``, ``"loss"``, ``"accuracy"``.
    patience : int
        Epochs without improvement tolerated before stopping.
    min_delta : float
        Smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}
        Whether lower or higher is better; ``"auto"`` maximises accuracies and minimises
        everything else.
    restore_best : bool
        Put back the parameters of the best epoch when training ends (stopped early or not).

    Attributes
    ----------
    best : float or None
        Best value seen.
    best_epoch : int or None
    wait : int
        Epochs since the last improvement.
    """

    def __init__(self, monitor="val_loss", patience=10, min_delta=0.0, mode="auto",
                 restore_best=True):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a history key (str), got {monitor!r}")
        self.monitor = monitor
        self.patience = int(check_positive(patience, "patience", numbers.Integral, allow_zero=True))
        self.min_delta = float(check_positive(min_delta, "min_delta", allow_zero=True))
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor or monitor.endswith("score") else "min"
        self.mode = mode
        self.restore_best = bool(restore_best)
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self._best_params = None

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, mode={self.mode!r}, restore_best={self.restore_best})")

    def on_train_begin(self, run):
        if self.best is None:
            self.wait = 0

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, run, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this run does not "
                             f"record; available: {sorted(logs)} (val_* need validation data "
                             f"or validation_split)")
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_params = run.net.get_params()
            return
        self.wait += 1
        if self.wait >= self.patience:
            run.stop(f"early stopping: {self.monitor} did not improve for {self.patience} "
                     f"epochs (best {self.best:.6g} at epoch {self.best_epoch})")

    def on_train_end(self, run):
        if self.restore_best and self._best_params is not None:
            run.net.set_params(*self._best_params)
            run.history.best_epoch = self.best_epoch

    def state_dict(self):
        config = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}
        arrays = {}
        if self._best_params is not None:
            W, b = self._best_params
            arrays.update({f"W{l}": w for l, w in enumerate(W)})
            arrays.update({f"b{l}": v for l, v in enumerate(b)})
        return config, arrays

    def load_state_dict(self, config, arrays):
        self.best, self.best_epoch, self.wait = config["best"], config["best_epoch"], config["wait"]
        n = sum(1 for k in arrays if k.startswith("W"))
        self._best_params = ([np.asarray(arrays[f"W{l}"]) for l in range(n)],
                             [np.asarray(arrays[f"b{l}"]) for l in range(n)]) if n else None


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when a monitored figure stops improving:
    PyTorch's ``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped once per epoch with
    the figure, under Keras's name for it (``monitor``).

    An epoch improves when the figure beats the best by the threshold (``"rel"``:
    ``a < best (1 − threshold)`` for ``"min"``, ``a > best (1 + threshold)`` for ``"max"``;
    ``"abs"``: ``best ∓ threshold``). After more than ``patience`` epochs without
    improvement the base rate becomes ``max(lr · factor, min_lr)`` (unless that changes
    it by less than ``eps``), and ``cooldown`` epochs follow in which bad epochs are not
    counted. The reduced rate replaces the optimizer's base rate (its schedule, if any,
    is applied to it); it is part of the callback's state, so a resumed run goes on
    with it.

    Parameters
    ----------
    monitor : str
        A key of the history (``"val_loss"``, ``"loss"``, ``"val_accuracy"``...).
    factor : float
        In ``(0, 1)``.
    patience, cooldown : int
        >= 0.
    threshold : float
        >= 0.
    threshold_mode : {"rel", "abs"}
    mode : {"auto", "min", "max"}
        ``"auto"`` maximises accuracies and minimises everything else.
    min_lr : float
    eps : float
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, mode="auto", eps=1e-8):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a history key (str), got {monitor!r}")
        factor = check_positive(factor, "factor")
        if factor >= 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.factor, self.threshold_mode = monitor, float(factor), threshold_mode
        self.mode = ("max" if "acc" in monitor or monitor.endswith("score") else "min") \
            if mode == "auto" else mode
        self.patience = int(check_positive(patience, "patience", numbers.Integral, allow_zero=True))
        self.cooldown = int(check_positive(cooldown, "cooldown", numbers.Integral, allow_zero=True))
        self.threshold = float(check_positive(threshold, "threshold", allow_zero=True))
        self.min_lr = float(check_positive(min_lr, "min_lr", allow_zero=True))
        self.eps = float(check_positive(eps, "eps", allow_zero=True))
        self.best = None
        self.num_bad_epochs = self.cooldown_counter = 0
        self.lr = None  # the reduced base rate (None: never reduced)

    def __repr__(self):
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
                f"patience={self.patience}, mode={self.mode!r})")

    def _better(self, value):
        """PyTorch's ``is_better``."""
        if self.best is None:
            return True
        sign = 1.0 if self.mode == "max" else -1.0
        if self.threshold_mode == "rel":
            bound = self.best * (1 + sign * self.threshold)
        else:
            bound = self.best + sign * self.threshold
        return value > bound if self.mode == "max" else value < bound

    def on_train_begin(self, run):
        run.optimizer.lr_reduced = self.lr

    def on_epoch_end(self, run, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"ReduceLROnPlateau monitors {self.monitor!r}, which this run "
                             f"does not record; available: {sorted(logs)}")
        value = float(logs[self.monitor])
        if self._better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = run.optimizer.lr if self.lr is None else self.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.lr = run.optimizer.lr_reduced = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def state_dict(self):
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "lr": self.lr}, {}

    def load_state_dict(self, config, arrays):
        self.best, self.num_bad_epochs = config["best"], int(config["num_bad_epochs"])
        self.cooldown_counter, self.lr = int(config["cooldown_counter"]), config["lr"]
