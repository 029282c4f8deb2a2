"""scikit-learn's MLP training semantics on a :class:`gpubp.Network` (for :mod:`gpubp.sklearn.estimators`).

scikit-learn's ``BaseMultilayerPerceptron`` defines what ``fit``/``partial_fit`` do around
the gradient: the initial weights drawn from ``random_state``, the shuffling, the L2
penalty ``α/2 ‖W‖² / n_batch`` on the weights only, the epoch loss, ``n_iter_no_change``
and ``tol`` on the training loss or the validation score, the ``"invscaling"`` and
``"adaptive"`` learning rates, the early-stopping split, warm starts and ``partial_fit``.
This module does exactly that, with every forward and backward pass, optimizer step and
full-batch gradient done by the network on its backend (CPU or GPU). The estimator holds
the state scikit-learn's does, under scikit-learn's attribute names.

``"sgd"`` and ``"adam"`` train through the one fit loop, :func:`gpubp.training.loop.fit`
(on the CPU backend: the compiled epoch), fed scikit-learn's batches and shuffled by the
estimator's ``RandomState``; what scikit-learn does between epochs is the callback
:class:`ScikitLearnEpochs`. The penalty and scikit-learn's Adam are the optimizers' own
(``penalty``, ``eps_hat``), so the loop's every path takes them. ``"lbfgs"`` minimises
the full-batch cost with :mod:`gpubp.optim.lbfgs`.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state

from gpubp import activations
from gpubp.core.network import Network
from gpubp.optim import lbfgs
from gpubp.optim.optimizers import SGD, Adam
from gpubp.optim.schedules import Schedule, get_schedule
from gpubp.data.validation import check_dtype
from gpubp.sklearn.params import ACTIVATIONS
from gpubp.training import loop
from gpubp.training.callbacks import Callback

# gpubp's output activations -> scikit-learn's (``out_activation_``), from the table
OUT_ACTIVATION = {name: sk for sk, name in activations.sklearn_names("output").items()}
NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain "
              "large values and need to be preprocessed.")


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


# -- SGD and Adam: the one fit loop, with scikit-learn's bookkeeping as a callback -------------
def _optimizer(est, net, incremental):
    """A new optimizer for ``fit``; the kept one (state included) for ``partial_fit``.

    scikit-learn's Adam is gpubp's with ``eps_hat`` (ε added to the uncorrected ``√v``),
    and its ``alpha`` is the optimizers' ``penalty`` (``α ‖W‖² / 2n`` per batch, weights
    only), so both run on the compiled epoch as on the per-kernel step.
    """
    previous = est.__dict__.get("_optimizer")
    if incremental and previous is not None:
        return previous
    if est.solver == "adam":
        opt = Adam(lr=est.learning_rate_init, beta1=est.beta_1, beta2=est.beta_2,
                   eps=est.epsilon, penalty=est.alpha, eps_hat=True)
    else:
        nesterov = bool(est.nesterovs_momentum) and est.momentum > 0
        opt = SGD(lr=est.learning_rate_init, momentum=min(est.momentum, 1 - 1e-16),
                  nesterov=nesterov, penalty=est.alpha)
    saved = est.__dict__.pop("_optimizer_saved", None)
    if incremental and saved is not None:  # an unpickled estimator continues its state
        config, iterations, arrays = saved
        opt.lr = config["lr"]  # the rate the last call left (invscaling, adaptive)
        opt.load_state(net.backend, net.params, iterations, arrays)
    if isinstance(est.learning_rate, (Schedule, str)) and est.learning_rate not in (
            "constant", "invscaling", "adaptive"):
        opt.schedule = get_schedule(est.learning_rate)
    return opt


def _validation_split(est, X, Y, sample_weight, rs):
    """scikit-learn's early-stopping split: ``(X, Y, sample_weight), (X_val, y_val, sw_val)``."""
    # scikit-learn stratifies on its boolean label-binarized targets (not multilabel)
    stratify = Y.astype(bool) if hasattr(est, "classes_") and est.n_outputs_ == 1 else None
    arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
    parts = train_test_split(*arrays, random_state=rs, test_size=est.validation_fraction,
                             stratify=stratify)
    X, X_val, Y, y_val = parts[:4]
    sw_val = None
    if sample_weight is not None:
        sample_weight, sw_val = parts[4:]
    if X_val.shape[0] < 2:
        raise ValueError("The validation set is too small. Increase "
                         "'validation_fraction' or the size of your dataset.")
    if hasattr(est, "classes_"):
        y_val = est._label_binarizer.inverse_transform(y_val)
    return (X, Y, sample_weight), (X_val, y_val, sw_val)


def _fit_stochastic(est, net, X, Y, sample_weight, incremental, rs):
    """``fit``/``partial_fit`` with ``"sgd"``/``"adam"``: :func:`gpubp.training.loop.fit`
    over scikit-learn's batches, shuffled by ``rs``, with :class:`ScikitLearnEpochs`."""
    opt = _optimizer(est, net, incremental)
    est._optimizer = opt
    if est.early_stopping and incremental:
        raise ValueError("partial_fit does not support early_stopping=True")
    validation = None
    if est.early_stopping:
        (X, Y, sample_weight), validation = _validation_split(est, X, Y, sample_weight, rs)
    n = X.shape[0]
    batch = min(200, n) if est.batch_size == "auto" else int(np.clip(est.batch_size, 1, n))
    if est.batch_size != "auto" and est.batch_size > n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                      "to be clipped", stacklevel=4)
    epochs = ScikitLearnEpochs(est, n, Y.shape[1] if net.loss_name == "mse" else 1,
                               validation, incremental)
    # A diverging run overflows on its way to non-finite weights; scikit-learn's behaviour
    # (NaN scores, then the ValueError of a non-finite result) follows, not a warning.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loop.fit(net, X, Y, epochs=1 if incremental else est.max_iter, batch_size=batch,
                 shuffle=est.shuffle, verbose=0, optimizer=opt, callbacks=[epochs],
                 sample_weight=sample_weight, rng=rs, diverged="continue",
                 privacy=est.privacy)


class ScikitLearnEpochs(Callback):
    """What scikit-learn does at the end of each epoch of ``_fit_stochastic``, on the fit
    loop's figures: ``loss_`` (the squared error averaged over the outputs too) and
    ``loss_curve_``, ``n_iter_``/``t_``, ``n_iter_no_change``/``tol`` on the training loss
    or the validation score (the best parameters kept and restored), the ``"invscaling"``
    and ``"adaptive"`` rates, the messages of ``verbose`` and the ``max_iter`` warning."""

    def __init__(self, est, n, loss_outputs, validation, incremental):
        self.est, self.n, self.loss_outputs = est, n, loss_outputs
        self.validation, self.incremental = validation, incremental
        self.best = None
        est.n_iter_ = 0

    def on_train_begin(self, run):
        if self.validation is not None:
            net = run.net
            self.best = net.backend.empty(net.theta.shape, net.theta.dtype)
            net.backend.copyto(self.best, net.theta)

    def on_epoch_end(self, run, epoch, logs):
        est, opt = self.est, run.optimizer
        penalty = logs.get("penalty", 0.0)
        est.n_iter_ += 1
        est.loss_ = (logs["loss"] - penalty) / self.loss_outputs + penalty
        est.t_ += self.n
        est.loss_curve_.append(est.loss_)
        if "epsilon" in logs:  # privacy=DPSGD(...): ε spent so far, at its δ
            est.epsilon_spent_ = logs["epsilon"]
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
        self._count_no_improvement(run.net)
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            _set_lr(opt, float(est.learning_rate_init) / (est.t_ + 1) ** est.power_t)
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if est.early_stopping else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for "
                   f"{est.n_iter_no_change} consecutive epochs.")
            if self._stops(opt, msg, sgd):
                run.stop(msg)
                return
            est._no_improvement_count = 0
        if not self.incremental and est.n_iter_ == est.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) "
                          f"reached and the optimization hasn't converged yet.",
                          ConvergenceWarning, stacklevel=2)

    def on_train_end(self, run):
        if self.best is not None:
            run.net.backend.copyto(run.net.theta, self.best)

    def _stops(self, opt, msg, sgd):
        """scikit-learn's ``trigger_stopping``: stop, or (``"adaptive"``) divide the rate by 5."""
        est = self.est
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

    def _count_no_improvement(self, net):
        """scikit-learn's ``_update_no_improvement_count``."""
        est = self.est
        if self.validation is None:
            if est.loss_curve_[-1] > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if est.loss_curve_[-1] < est.best_loss_:
                est.best_loss_ = est.loss_curve_[-1]
            return
        X_val, y_val, sw_val = self.validation
        score = est._score(X_val, y_val, sample_weight=sw_val,
                           y_pred=est._prediction(net.forward(X_val)))
        est.validation_scores_.append(score)
        if est.verbose:
            print(f"Validation score: {score:f}")
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            net.backend.copyto(self.best, net.theta)


def _set_lr(opt, lr):
    """Set the (constant-schedule) rate of the next steps, as scikit-learn's optimizers do
    (``opt.learning_rate`` reads it at once)."""
    opt.lr = lr
    opt.start_epoch(0, 1)
