"""Callbacks that write a run where people watch it: a CSV file and TensorBoard.

Each writes as the run goes (flushed after every epoch), so ``tail -f`` or a running
``tensorboard --logdir`` shows it live. MLflow: :mod:`gpubp.training.mlflow_logger`.
"""

import csv
import io
import os

from gpubp.io.atomic import atomic_write, check_output_path, fspath
from gpubp.optional import require
from gpubp.training.callbacks import Callback


class CSVLogger(Callback):
    """One CSV row per epoch: ``epoch`` and the figures of the history (``loss``, ``lr``,...).

    Parameters
    ----------
    path : str or os.PathLike
        The file. A new run writes it afresh (header first); a run resumed from a
        checkpoint appends to it, first dropping the rows of the epochs it takes again
        (those written after the checkpoint), so the file holds each epoch once.
    separator : str
        The field delimiter (one character).
    """

    def __init__(self, path, separator=","):
        self.path = fspath(path, "path")
        check_output_path(self.path, "path")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be one character, got {separator!r}")
        self.separator = separator
        self._file = self._writer = None
        self._columns = None

    def __repr__(self):
        return f"CSVLogger({self.path!r}, separator={self.separator!r})"

    def on_train_begin(self, run):
        done = run.history.epoch  # a resumed run has recorded epochs
        if done and os.path.exists(self.path):
            self._keep_epochs_before(done[-1] + 1)
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        else:
            self._file = open(self.path, "w", newline="", encoding="utf-8")
            self._columns = None

    def _keep_epochs_before(self, epoch):
        """Rewrite the file (atomically) without the rows of ``epoch`` and later ones."""
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=self.separator)
            rows = list(reader)
        if not rows:
            self._columns = None
            return
        self._columns = rows[0][1:]
        kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epoch]
        text = io.StringIO(newline="")
        csv.writer(text, delimiter=self.separator).writerows(kept)
        atomic_write(self.path, lambda f: f.write(text.getvalue().encode("utf-8")))

    def on_epoch_end(self, run, epoch, logs):
        writer = csv.writer(self._file, delimiter=self.separator)
        if self._columns is None:
            self._columns = list(logs)
            writer.writerow(["epoch", *self._columns])
        writer.writerow([epoch, *(repr(float(logs[k])) if k in logs else "" for k in
                                  self._columns)])
        self._file.flush()

    def on_train_end(self, run):
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoard(Callback):
    """TensorBoard event files of the run, through ``tensorboardX`` (``gpubp[tensorboard]``).

    Every figure of the history is a scalar at step ``epoch`` under its own name
    (``loss``, ``val_loss``, ``accuracy``, ``lr``; with ``fit(gradient_flow=True)`` also
    ``grad_norm_W{l}`` and ``mean_abs_delta{l}``, the gradient flow).

    Parameters
    ----------
    logdir : str or os.PathLike
        The run's directory (created if need be); ``tensorboard --logdir`` it.
    histograms : bool
        Also write per-layer histograms ``W/{l}`` and ``b/{l}`` after each
        ``histogram_every`` epochs.
    histogram_every : int
    trace_data : (X, Y) or None
        A batch whose backward pass is traced (:meth:`gpubp.Network.trace`) with the
        histograms: ``delta/{l}`` (``δ^l``) and ``grad_W/{l}`` (``∂C/∂W^l``).
    batch_every : int or None
        Also write ``batch/loss`` (and ``batch/accuracy``) at the optimizer's step every
        ``batch_every`` batches (the compiled epoch then runs in chunks, see
        :mod:`gpubp.training.batches`); None: per epoch only.
    """

    def __init__(self, logdir, histograms=False, histogram_every=1, trace_data=None,
                 batch_every=None):
        self.logdir = fspath(logdir, "logdir")
        if os.path.exists(self.logdir) and not os.path.isdir(self.logdir):
            raise ValueError(f"logdir must be a directory, got {self.logdir!r} (a file)")
        for name, value in (("histogram_every", histogram_every), ("batch_every", batch_every)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if histogram_every is None:
            raise ValueError("histogram_every must be a positive int, got None")
        if not isinstance(histograms, bool):
            raise TypeError(f"histograms must be True or False, got {histograms!r}")
        if trace_data is not None and (not isinstance(trace_data, tuple) or len(trace_data) != 2):
            raise TypeError(f"trace_data must be a tuple (X, Y) or None, got "
                            f"{type(trace_data).__name__}")
        self.histograms, self.histogram_every = histograms, histogram_every
        self.trace_data = trace_data
        self.writer = None
        require("tensorboardX", "tensorboard", "the TensorBoard callback")  # fail early
        if batch_every is not None:
            self.batch_every = batch_every
            self.on_batch_end = self._batch_end  # only then: the compiled epoch in chunks

    def __repr__(self):
        return f"TensorBoard({self.logdir!r}, histograms={self.histograms})"

    def on_train_begin(self, run):
        tensorboardX = require("tensorboardX", "tensorboard", "the TensorBoard callback")
        os.makedirs(self.logdir, exist_ok=True)
        self.writer = tensorboardX.SummaryWriter(self.logdir)

    def _batch_end(self, run, batch, logs):
        for key in ("loss", "accuracy"):
            if key in logs:
                self.writer.add_scalar(f"batch/{key}", logs[key], logs["step"])

    def on_epoch_end(self, run, epoch, logs):
        for key, value in logs.items():
            self.writer.add_scalar(key, value, epoch)
        if self.histograms and (epoch + 1) % self.histogram_every == 0:
            W, b = run.net.get_params()
            for l, (w, v) in enumerate(zip(W, b), start=1):
                self.writer.add_histogram(f"W/{l}", w, epoch)
                self.writer.add_histogram(f"b/{l}", v, epoch)
            if self.trace_data is not None:
                t = run.net.trace(*self.trace_data)
                for l, (delta, dW) in enumerate(zip(t.delta, t.dW), start=1):
                    self.writer.add_histogram(f"delta/{l}", delta, epoch)
                    self.writer.add_histogram(f"grad_W/{l}", dW, epoch)
        self.writer.flush()

    def on_train_end(self, run):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
