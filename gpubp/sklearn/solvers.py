"""scikit-learn's MLP training semantics on a :class:`gpubp.Network` (for :mod:`gpubp.sklearn.estimators`).

scikit-learn's ``BaseMultilayerPerceptron`` defines what ``fit``/``partial_fit`` do around
the gradient: the initial weights drawn from ``random_state``, the shuffling, the L2
penalty ``α/2 ‖W‖² / n_batch`` on the weights only, the epoch loss, ``n_iter_no_change``
and ``tol`` on the training loss or the validation score, the ``"invscaling"`` and
``"adaptive"`` learning rates, the early-stopping split, warm starts and ``partial_fit``.
This module does exactly that, with every forward and backward pass, optimizer step and
full-batch gradient done by the network on its backend (CPU or GPU). The estimator holds
the state scikit-learn's does, under scikit-learn's attribute names.
"""

import math
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils import shuffle as shuffled

from gpubp import activations
from gpubp.optim import lbfgs
from gpubp.core.network import Network
from gpubp.optim.optimizers import SGD, Adam
from gpubp.optim.schedules import Schedule, get_schedule
from gpubp.data.validation import check_dtype
from gpubp.kernels.reference import AdamStep

# scikit-learn's activation names -> gpubp's (hidden layers); gpubp's -> scikit-learn's
# (``out_activation_``), from the table
ACTIVATIONS = activations.sklearn_names("hidden")
OUT_ACTIVATION = {name: sk for sk, name in activations.sklearn_names("output").items()}


# -- the network behind an estimator ------------------------------------------------------------
def network(est, sync=False):
    """The estimator's network, rebuilt (after unpickling, or when ``coefs_`` were replaced)
    or re-synchronised from ``coefs_``/``intercepts_`` when needed."""
    net = est.__dict__.get("_net")
    coefs = est.coefs_
    sizes = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
    dtype = np.dtype(coefs[0].dtype if coefs[0].dtype in (np.float32, np.float64) else np.float64)
    if net is None or net.sizes != sizes or net.dtype != dtype or net.output != est._output:
        net = Network(sizes, hidden=ACTIVATIONS[est.activation], output=est._output,
                      device=est.device, dtype=dtype.name, seed=0)
        est._net, sync = net, True
        est.__dict__.pop("_optimizer", None)  # its state lived on the old network
        est.device_ = net.device
    exported = est.__dict__.get("_exported")
    if sync or exported is None or exported[0] is not coefs or exported[1] is not est.intercepts_ \
            or any(a is not b for a, b in zip(exported[2], coefs + est.intercepts_)):
        net.set_params([np.asarray(c) for c in coefs], [np.asarray(b) for b in est.intercepts_])
        _remember(est)
    return net


def _remember(est):
    est._exported = (est.coefs_, est.intercepts_, list(est.coefs_ + est.intercepts_))


def _export(est, net):
    est.coefs_, est.intercepts_ = net.get_params()
    _remember(est)


def _initialize(est, sizes, dtype, rs):
    """scikit-learn's ``_initialize``: attributes, and Glorot-uniform weights *and* biases
    drawn from ``rs`` in scikit-learn's order (so a seed gives scikit-learn's start)."""
    est.n_iter_, est.t_ = 0, 0
    est.n_layers_ = len(sizes)
    est.out_activation_ = OUT_ACTIVATION[est._output]
    factor = 2.0 if est.activation == "logistic" else 6.0
    est.coefs_, est.intercepts_ = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(factor / (fan_in + fan_out))
        est.coefs_.append(rs.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype, copy=False))
        est.intercepts_.append(rs.uniform(-bound, bound, fan_out).astype(dtype, copy=False))
    est.__dict__.pop("_optimizer", None)
    est.__dict__.pop("_optimizer_saved", None)
    if est.solver in ("sgd", "adam"):
        est.loss_curve_ = []
        est._no_improvement_count = 0
        if est.early_stopping:
            est.validation_scores_, est.best_validation_score_, est.best_loss_ = [], -np.inf, None
        else:
            est.best_loss_, est.validation_scores_, est.best_validation_score_ = np.inf, None, None


def fit(est, X, Y, sample_weight, sizes, first_pass, incremental):
    """Train ``est`` on validated ``X`` (dense or sparse) and 2-D float targets ``Y``."""
    rs = check_random_state(est.random_state)
    dtype = np.dtype(X.dtype) if est.dtype is None else check_dtype(est.dtype)
    if first_pass:
        _initialize(est, sizes, dtype, rs)
    elif est.coefs_[0].dtype != dtype:
        est.coefs_ = [np.asarray(c, dtype) for c in est.coefs_]
        est.intercepts_ = [np.asarray(b, dtype) for b in est.intercepts_]
    X = X.astype(dtype, copy=False)
    net = network(est, sync=True)
    est.device_ = net.device
    if est.solver == "lbfgs":
        _fit_lbfgs(est, net, X, Y, sample_weight)
    else:
        _fit_stochastic(est, net, X, Y, sample_weight, incremental, rs)
    _export(est, net)


# -- L-BFGS ---------------------------------------------------------------------------------
def _fit_lbfgs(est, net, X, Y, sample_weight):
    callback = None
    if est.verbose:
        def callback(result):
            callback.n += 1
            print(f"Iteration {callback.n}, loss = {result.fun:.8f}")
        callback.n = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        result = lbfgs.minimize(net, X, Y, sample_weight=sample_weight, alpha=est.alpha,
                                max_iter=est.max_iter, max_fun=est.max_fun, tol=est.tol,
                                callback=callback)
    if result.status != 0:
        message = result.message.decode() if isinstance(result.message, bytes) else result.message
        warnings.warn(f"lbfgs failed to converge after {result.nit} iteration(s) "
                      f"(status={result.status}):\n{message}.\n\nIncrease the number of "
                      f"iterations (max_iter) or scale the data as shown in:\n    "
                      f"https://scikit-learn.org/stable/modules/preprocessing.html",
                      ConvergenceWarning, stacklevel=4)
    est.n_iter_ = min(result.nit, est.max_iter)
    est.loss_ = float(result.fun)


# -- SGD and Adam ------------------------------------------------------------------------------
class SklearnAdam(Adam):
    """Adam with scikit-learn's placement of ε.

    gpubp's step is ``η m̂ / (√v̂ + ε)``; scikit-learn's is ``η_t m / (√v + ε)`` with
    ``η_t = η √(1 − β2^t) / (1 − β1^t)``, which is gpubp's with ``ε / √(1 − β2^t)`` in place
    of ``ε``. Passing that to the same fused kernel reproduces scikit-learn's fits.
    """

    def _update(self, backend, param, grad, state, lr):
        eps = self.eps / math.sqrt(1.0 - self.beta2 ** self.iterations)
        backend.adam_update(param, grad, state["m"], state["v"],
                            AdamStep(lr, self.beta1, self.beta2, eps, self.iterations,
                                     self.weight_decay))


def _optimizer(est, net, incremental):
    """A new optimizer for ``fit``; the kept one (state included) for ``partial_fit``."""
    previous = est.__dict__.get("_optimizer")
    if incremental and previous is not None:
        return previous
    if est.solver == "adam":
        opt = SklearnAdam(lr=est.learning_rate_init, beta1=est.beta_1, beta2=est.beta_2,
                          eps=est.epsilon)
    else:
        nesterov = bool(est.nesterovs_momentum) and est.momentum > 0
        opt = SGD(lr=est.learning_rate_init, momentum=min(est.momentum, 1 - 1e-16),
                  nesterov=nesterov)
    saved = est.__dict__.pop("_optimizer_saved", None)
    if incremental and saved is not None:  # an unpickled estimator continues its state
        config, iterations, arrays = saved
        opt.lr = config["lr"]  # the rate the last call left (invscaling, adaptive)
        opt.load_state(net.backend, net.params, iterations, arrays)
    if isinstance(est.learning_rate, (Schedule, str)) and est.learning_rate not in (
            "constant", "invscaling", "adaptive"):
        opt.schedule = get_schedule(est.learning_rate)
    return opt


def _step(net, opt, X, Y, index, sample_weight, alpha, mse_outputs):
    """One mini-batch step; returns scikit-learn's batch loss (with the penalty) and P."""
    P = net._load(X, Y, index, weights=sample_weight)
    net._forward(P)
    cost = net._backward(P)
    if mse_outputs:
        cost = cost / mse_outputs  # scikit-learn's squared loss averages over the outputs
    if alpha:
        # α/2 ‖W‖² / Σs on the weights only: its gradient α W / Σs joins a^T δ / Σs
        n = P if sample_weight is None else float(sample_weight[index].sum())
        xp = net.backend.xp
        for W, dW in zip(net.W, net.nabla_w):
            dW += (alpha / n) * W
            cost = cost + (0.5 * alpha / n) * xp.vdot(W, W)
    net._update(opt)
    return cost, P


def _fit_stochastic(est, net, X, Y, sample_weight, incremental, rs):
    opt = _optimizer(est, net, incremental)
    est._optimizer = opt
    if est.early_stopping and incremental:
        raise ValueError("partial_fit does not support early_stopping=True")
    X_val = y_val = sw_val = None
    if est.early_stopping:
        # scikit-learn stratifies on its boolean label-binarized targets (not multilabel)
        stratify = Y.astype(bool) if hasattr(est, "classes_") and est.n_outputs_ == 1 else None
        arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
        parts = train_test_split(*arrays, random_state=rs, test_size=est.validation_fraction,
                                 stratify=stratify)
        X, X_val, Y, y_val = parts[:4]
        if sample_weight is not None:
            sample_weight, sw_val = parts[4:]
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        if hasattr(est, "classes_"):
            y_val = est._label_binarizer.inverse_transform(y_val)
    n = X.shape[0]
    batch = min(200, n) if est.batch_size == "auto" else int(np.clip(est.batch_size, 1, n))
    if est.batch_size != "auto" and est.batch_size > n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                      "to be clipped", stacklevel=4)
    mse_outputs = Y.shape[1] if net.loss_name == "mse" else 0
    sgd = est.solver == "sgd"
    schedule = isinstance(opt.schedule, Schedule) and opt.schedule.name != "constant"
    best = [net.backend.empty(p.shape, p.dtype) for p in net.params] if est.early_stopping \
        else None
    if best is not None:
        for dst, src in zip(best, net.params):
            net.backend.copyto(dst, src)
    sample_idx = np.arange(n)
    est.n_iter_ = 0
    # A diverging run overflows on its way to non-finite weights; scikit-learn's behaviour
    # (NaN scores, then the ValueError of a non-finite result) follows, not a warning.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for it in range(est.max_iter):
            if est.shuffle:
                sample_idx = shuffled(sample_idx, random_state=rs)
            if schedule:
                opt.start_epoch(it, est.max_iter)
            else:
                opt.start_epoch(0, 1)
            accumulated = 0.0
            for batch_slice in gen_batches(n, batch):
                index = sample_idx[batch_slice] if est.shuffle else np.arange(
                    batch_slice.start, batch_slice.stop)
                cost, P = _step(net, opt, X, Y, index, sample_weight, est.alpha, mse_outputs)
                accumulated = accumulated + cost * P
            est.n_iter_ += 1
            est.loss_ = float(accumulated) / n
            est.t_ += n
            est.loss_curve_.append(est.loss_)
            if est.verbose:
                print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
            _update_no_improvement_count(est, net, best, X_val, y_val, sw_val)
            if sgd and est.learning_rate == "invscaling":
                _set_lr(opt, float(est.learning_rate_init) / (est.t_ + 1) ** est.power_t)
            if est._no_improvement_count > est.n_iter_no_change:
                what = "Validation score" if est.early_stopping else "Training loss"
                msg = (f"{what} did not improve more than tol={est.tol:f} for "
                       f"{est.n_iter_no_change} consecutive epochs.")
                if _trigger_stopping(est, opt, msg, sgd):
                    break
                est._no_improvement_count = 0
            if incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) "
                              f"reached and the optimization hasn't converged yet.",
                              ConvergenceWarning, stacklevel=4)
    if best is not None:
        for dst, src in zip(net.params, best):
            net.backend.copyto(dst, src)


def _set_lr(opt, lr):
    """Set the (constant-schedule) rate of the next steps, as scikit-learn's optimizers do."""
    opt.lr = lr
    opt.start_epoch(0, 1)


def _trigger_stopping(est, opt, msg, sgd):
    """scikit-learn's ``trigger_stopping``: stop, or (``"adaptive"``) divide the rate by 5."""
    if not (sgd and est.learning_rate == "adaptive"):
        if est.verbose:
            print(msg + " Stopping.")
        return True
    if opt.lr <= 1e-6:
        if est.verbose:
            print(msg + " Learning rate too small. Stopping.")
        return True
    _set_lr(opt, opt.lr / 5.0)
    if est.verbose:
        print(msg + f" Setting learning rate to {opt.lr:f}")
    return False


def _update_no_improvement_count(est, net, best, X_val, y_val, sw_val):
    if best is not None:
        y_pred = est._prediction(net.forward(X_val))
        score = est._score(X_val, y_val, sample_weight=sw_val, y_pred=y_pred)
        est.validation_scores_.append(score)
        if est.verbose:
            print(f"Validation score: {score:f}")
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            for dst, src in zip(best, net.params):
                net.backend.copyto(dst, src)
    else:
        if est.loss_curve_[-1] > est.best_loss_ - est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if est.loss_curve_[-1] < est.best_loss_:
            est.best_loss_ = est.loss_curve_[-1]
