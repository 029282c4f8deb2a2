"""The training loop of :meth:`gpubp.Network.fit`: epochs of shuffled mini-batch steps.

Kept apart from the network so that the algorithm (``network.py``) reads in one sitting
and the bookkeeping around it (validation, stopping tests, progress, divergence) lives
here.
"""

import numbers

import numpy as np
from tqdm.auto import tqdm

from gpubp import metrics
from gpubp.history import History
from gpubp.optimizers import get_optimizer
from gpubp.validation import check_positive


class TrainingDiverged(FloatingPointError):
    """Raised by :meth:`Network.fit` when the loss stops being finite."""


def fit(net, X, Y, epochs=10, batch_size=32, lr=None, shuffle=True, tol=None,
        validation_data=None, verbose=1, optimizer="sgd"):
    """Train ``net`` in place; see :meth:`gpubp.Network.fit` for the parameters."""
    X, Y = net._check_XY(X, Y)
    check_positive(epochs, "epochs", numbers.Integral)
    check_positive(batch_size, "batch_size", numbers.Integral)
    if tol is not None:
        check_positive(tol, "tol", allow_zero=True)
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a tuple (X_val, Y_val)")
        validation_data = net._check_XY(*validation_data)
    optimizer = get_optimizer(optimizer, lr)

    P_total = X.shape[0]
    batch_size = min(batch_size, P_total)
    net._workspace(batch_size)
    order = np.arange(P_total)
    snapshot = [net.backend.empty(p.shape, p.dtype) for p in net.params]
    history = History()
    bar = tqdm(range(epochs), desc="epochs", unit="epoch", disable=None if verbose == 1 else True,
               leave=False)
    for epoch in bar:
        for dst, src in zip(snapshot, net.params):
            net.backend.copyto(dst, src)
        if shuffle:
            net.rng.shuffle(order)
        total = 0.0
        # A diverging run overflows on the way to a non-finite loss; that is detected
        # and reported below, so the floating-point warnings it raises are not news.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, P_total, batch_size):
                cost, P = net._train_step(optimizer, X, Y, order[start:start + batch_size])
                total = total + cost * P
            epoch_loss = float(total) / P_total
            if not (np.isfinite(epoch_loss) and net.backend.all_finite(net.params)):
                for dst, src in zip(net.params, snapshot):
                    net.backend.copyto(dst, src)
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch}: the loss became {epoch_loss} "
                    f"(lr={optimizer.lr}); the parameters from the start of that epoch "
                    f"were restored. Try a smaller learning rate."
                )
        figures = {"loss": epoch_loss}
        if net.is_classifier:
            figures["accuracy"] = metrics.accuracy(net.forward(X), Y, net.loss_name)
        if validation_data is not None:
            figures.update({f"val_{k}": v for k, v in net.evaluate(*validation_data).items()})
        if tol is not None:
            _, dW, db = net._cost_and_gradients(X, Y, want_gradients=True)
            figures["grad_norm"] = float(np.sqrt(sum(float((g.astype(np.float64) ** 2).sum())
                                                     for g in dW + db)))
        history.record(epoch, **figures)
        bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items()}, refresh=False)
        if verbose == 2:
            line = " - ".join(f"{k}: {v:.4g}" for k, v in figures.items())
            tqdm.write(f"epoch {epoch + 1}/{epochs} - {line}")
        if tol is not None and figures["grad_norm"] <= tol:
            history.stop_reason = f"gradient norm {figures['grad_norm']:.3g} <= tol {tol}"
            break
    bar.close()
    return history

