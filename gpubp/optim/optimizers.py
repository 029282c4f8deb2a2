"""Optimizers and learning-rate schedules: small objects around the backend's fused updates.

An optimizer keeps its state (momentum buffers, Adam moments) on the network's backend, one
flat buffer per state name laid out like ``Network.theta``, and calls the backend's
``sgd_update`` or ``adam_update`` kernel once over the whole parameter vector, so each
training step writes every parameter once, in one fused call, on every backend (apex's and
PyTorch's multi-tensor updates). ``Network.fit(optimizer=...)`` takes a name
(``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``) or an instance; ``schedule=``
takes ``"constant"``, ``"step"``, ``"cosine"`` or a :class:`Schedule`.

The learning rate changes once per epoch (``fit`` calls :meth:`Optimizer.start_epoch`);
within an epoch it is constant. Every optimizer can export its hyperparameters
(:meth:`Optimizer.get_config`) and its state as host arrays (:meth:`Optimizer.state_arrays`)
for checkpoints, and take them back exactly.
"""

import math
import numbers

import numpy as np

from gpubp.data.validation import check_positive
from gpubp.kernels.reference import AdamStep
from gpubp.optim.schedules import Constant, get_schedule


class Optimizer:
    """Base class: a learning rate, a schedule, L2 weight decay and per-parameter state.

    Parameters
    ----------
    lr : float
        Base learning rate ``η``.
    weight_decay : float
        L2 penalty ``λ``: the update uses ``∇C + λ θ`` (``λ/2 ‖θ‖²`` added to the cost),
        for every parameter, as PyTorch's ``weight_decay``.
    schedule : str, Schedule or None
        How the rate changes from epoch to epoch (None: constant).
    penalty : float
        L2 penalty ``α`` on the weights only (not the biases), per batch, as
        scikit-learn's ``alpha``: a batch of ``n`` rows (or of total sample weight ``n``)
        adds ``α ‖W‖² / (2n)`` to its cost, so ``α W / n`` to ``∂C/∂W``. The loop tells
        the optimizer each batch's ``n`` (:meth:`begin_batch`), which returns the term of
        the cost; the update adds the gradient.

    Attributes
    ----------
    iterations : int
        Steps taken (Adam's ``t``).
    flat_state : dict of str to backend array, or None
        One flat buffer per state name (``"velocity"``, ``"m"``, ``"v"``), laid out like
        the concatenated parameters, allocated on the first step.
    state : dict of str to list of backend arrays, or None
        The same buffers as views shaped like each parameter.
    """

    name = "optimizer"
    state_names = ()
    # whether each parameter's update reads only its own gradient and state (then any
    # span of the flat vector can be updated alone); subclasses that override _update
    # must say so themselves
    elementwise = False

    def __init__(self, lr=0.1, weight_decay=0.0, schedule=None, penalty=0.0):
        self.lr = float(check_positive(lr, "lr"))
        self.weight_decay = float(check_positive(weight_decay, "weight_decay", allow_zero=True))
        self.penalty = float(check_positive(penalty, "penalty", allow_zero=True))
        self._penalty_scale = 0.0  # α / n of the batch in progress
        self.schedule = get_schedule(schedule)
        self.iterations = 0
        self.state = None
        self.flat_state = None
        self._epoch_lr = None

    def _hyperparameters(self):
        return {"lr": self.lr, "weight_decay": self.weight_decay, **self._penalty_config()}

    def _penalty_config(self):
        return {"penalty": self.penalty} if self.penalty else {}

    def get_config(self):
        """Hyperparameters as a JSON-able dict that :func:`from_config` rebuilds."""
        return {"name": self.name, **self._hyperparameters(),
                "schedule": self.schedule.get_config()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        sched = "" if isinstance(self.schedule, Constant) else f", schedule={self.schedule!r}"
        return f"{type(self).__name__}({args}{sched})"

    def initialize(self, backend, params):
        """Allocate the zeroed state: one flat buffer per state name, viewed per parameter.

        Parameters
        ----------
        backend : Backend
        params : list of backend arrays
            The parameters, in the order of ``Network.params`` (that of ``Network.theta``).
        """
        self._shapes = [tuple(p.shape) for p in params]
        self._size = sum(math.prod(shape) for shape in self._shapes)
        self._hold({key: backend.zeros((self._size,), params[0].dtype)
                    for key in self.state_names})

    def __getstate__(self):
        # the per-parameter views would pickle as copies of their own, apart from the flat
        # buffers the fused step updates: they are rebuilt from those on unpickling
        state = dict(self.__dict__)
        state["state"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.flat_state is not None:
            self._hold(self.flat_state)

    def _hold(self, flat_state):
        """``flat_state`` (name -> (N,) buffer) becomes the state, with its views per
        parameter."""
        sizes = [math.prod(shape) for shape in self._shapes]
        self.flat_state = dict(flat_state)
        self.state = {key: _views(buf, self._shapes, sizes)
                      for key, buf in self.flat_state.items()}

    def _move_state(self, flat_state, copy=True):
        """Make the buffers of ``flat_state`` (name -> (N,) backend array) hold the state.

        The values are copied over (unless ``copy`` is False: they are there already) and
        the per-parameter views rebuilt; returns the previous buffers, to move it back
        with (as :func:`gpubp.distributed.shared_memory.move_flat` does the parameters).
        """
        previous = self.flat_state
        if copy:
            for key, buf in flat_state.items():
                buf[...] = previous[key]
        self._hold(flat_state)
        return previous

    def start_epoch(self, epoch, epochs):
        """Set the learning rate of 0-based ``epoch`` from the schedule; returns it."""
        self._epoch_lr = float(self.schedule(self.lr, epoch, epochs))
        return self._epoch_lr

    def current_lr(self):
        """The learning rate for the next step."""
        return self.lr if self._epoch_lr is None else self._epoch_lr

    @property
    def learning_rate(self):
        """The learning rate for the next step (scikit-learn's optimizers' name for it)."""
        return self.current_lr()

    def begin_batch(self, backend, params, n):
        """The next step is on a batch of ``n`` rows (or of total sample weight ``n``):
        with a :attr:`penalty`, set its gradient ``α W / n`` for the update and return its
        term ``α ‖W‖² / (2n)`` of the batch's cost (0.0 without one)."""
        if not self.penalty:
            return 0.0
        self._penalty_scale = self.penalty / n if n > 0 else 0.0
        xp = backend.xp
        return 0.5 * self._penalty_scale * sum(xp.vdot(p, p) for p in params if p.ndim == 2)

    def step(self, backend, params, grads, *, theta=None, nabla_theta=None, span=None):
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        backend : Backend
        params, grads : list of backend arrays
            Aligned lists (``Network.params``, ``Network.grads``).
        theta, nabla_theta : backend array, shape (N,), optional
            The same parameters and gradients as one contiguous vector each, of which
            ``params`` and ``grads`` are views (``Network.theta``, ``Network.nabla_theta``).
            When given, the update is one fused kernel call over the whole vector;
            otherwise one call per parameter.
        span : slice or sequence of slices, optional
            With ``theta``: update ``theta[span]`` only (each span, one step), from
            ``nabla_theta[span]`` and the same span of the state (a rank's share of
            parameters that the ranks of a machine share, :mod:`gpubp.distributed.reductions`).
            Only for optimizers whose update is elementwise (:attr:`elementwise`).
        """
        if self.state is None:
            self.initialize(backend, params)
        self.iterations += 1
        lr = self.current_lr()
        if (theta is None) != (nabla_theta is None):
            raise ValueError("theta and nabla_theta must be given together, got only one")
        if self.penalty:  # the weights' decay differs from the biases': one call each
            if span is not None:
                raise ValueError(f"span: {type(self).__name__} with a penalty updates its "
                                 f"parameters one by one")
            theta = nabla_theta = None
        if theta is not None:
            n = self._size
            if theta.shape != (n,) or nabla_theta.shape != (n,):
                raise ValueError(f"theta and nabla_theta must have shape ({n},), the total "
                                 f"size of params, got {theta.shape} and {nabla_theta.shape}")
            if span is None:
                self._update(backend, theta, nabla_theta, self.flat_state, lr)
            elif not self.elementwise:
                raise ValueError(f"span: {type(self).__name__} does not update elementwise")
            else:
                for part in [span] if isinstance(span, slice) else span:
                    self._update(backend, theta[part], nabla_theta[part],
                                 {k: buf[part] for k, buf in self.flat_state.items()}, lr)
            return
        for i, (param, grad) in enumerate(zip(params, grads)):
            state = {k: bufs[i] for k, bufs in self.state.items()}
            if self.penalty:
                decay = self.weight_decay + (self._penalty_scale if param.ndim == 2 else 0.0)
                self._update(backend, param, grad, state, lr, decay)
            else:
                self._update(backend, param, grad, state, lr)

    def _update(self, backend, param, grad, state, lr, weight_decay=None):
        """One fused kernel call: ``param`` and ``state``'s buffers are laid out alike;
        ``weight_decay`` (None: :attr:`weight_decay`) is the decay of this span."""
        raise NotImplementedError

    # -- checkpoints ------------------------------------------------------------------
    def state_arrays(self, backend):
        """The state as host arrays ``{"velocity.0": ndarray, ...}`` (empty before a step)."""
        if self.state is None:
            return {}
        return {f"{key}.{i}": backend.to_host(buf)
                for key, bufs in self.state.items() for i, buf in enumerate(bufs)}

    def load_state(self, backend, params, iterations, arrays):
        """Restore the step count and the buffers written by :meth:`state_arrays`.

        Raises
        ------
        ValueError
            When a buffer is missing or does not match its parameter's shape.
        """
        self.iterations = int(iterations)
        if not arrays:
            self.state = self.flat_state = None
            return
        self.initialize(backend, params)
        for key, bufs in self.state.items():
            for i, buf in enumerate(bufs):
                name = f"{key}.{i}"
                if name not in arrays or arrays[name].shape != buf.shape:
                    got = arrays[name].shape if name in arrays else "missing"
                    raise ValueError(f"optimizer state {name!r} must have shape {buf.shape}, "
                                     f"got {got}")
                backend.to_device(np.ascontiguousarray(arrays[name], dtype=buf.dtype), out=buf)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, PyTorch's convention.

    ``v ← μ v + g``; ``θ ← θ − η v`` (or ``θ ← θ − η (g + μ v)`` with Nesterov), where
    ``g = ∇C + λ θ``. With ``momentum=0`` this is the plain ``θ ← θ − η g`` of the
    derivation.

    Parameters
    ----------
    lr : float
    momentum : float
        ``μ`` in ``[0, 1)``.
    nesterov : bool
        Nesterov's look-ahead form (needs ``momentum > 0``).
    weight_decay : float
    schedule : str, Schedule or None
    """

    name = "sgd"
    elementwise = True

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, schedule=None,
                 penalty=0.0):
        super().__init__(lr, weight_decay, schedule, penalty)
        self.momentum = float(check_positive(momentum, "momentum", allow_zero=True))
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and not self.momentum:
            raise ValueError(f"nesterov=True needs momentum > 0, got momentum={momentum!r}")
        self.nesterov = bool(nesterov)
        self.state_names = ("velocity",) if self.momentum else ()

    def _hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, **self._penalty_config()}

    def _update(self, backend, param, grad, state, lr, weight_decay=None):
        velocity = state["velocity"] if self.momentum else None
        backend.sgd_update(param, grad, velocity, lr, self.momentum, self.nesterov,
                           self.weight_decay if weight_decay is None else weight_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias-corrected moments and L2 weight decay.

    Parameters
    ----------
    lr : float
    beta1, beta2 : float
        Moment decay rates in ``[0, 1)``.
    eps : float
    weight_decay : float
    schedule : str, Schedule or None
    penalty : float
    eps_hat : bool
        Add ``eps`` to the uncorrected ``√v``: the step ``η_t m / (√v + ε̂)`` with
        ``η_t = η √(1 − β2^t) / (1 − β1^t)`` of Kingma & Ba's section 2 (scikit-learn's
        Adam), which is the default step with ``ε / √(1 − β2^t)`` in place of ``ε``.
    """

    name = "adam"
    elementwise = True
    state_names = ("m", "v")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 schedule=None, penalty=0.0, eps_hat=False):
        super().__init__(lr, weight_decay, schedule, penalty)
        self.eps_hat = bool(eps_hat)
        for value, arg in ((beta1, "beta1"), (beta2, "beta2")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
                raise ValueError(f"{arg} must be in [0, 1), got {value!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = float(check_positive(eps, "eps"))

    def _hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, **self._penalty_config(),
                **({"eps_hat": True} if self.eps_hat else {})}

    def step_eps(self):
        """The ε of the next step's kernel (see ``eps_hat``)."""
        if not self.eps_hat:
            return self.eps
        return self.eps / math.sqrt(1.0 - self.beta2 ** self.iterations)

    def _update(self, backend, param, grad, state, lr, weight_decay=None):
        decay = self.weight_decay if weight_decay is None else weight_decay
        backend.adam_update(param, grad, state["m"], state["v"],
                            AdamStep(lr, self.beta1, self.beta2, self.step_eps(),
                                     self.iterations, decay))


def _views(flat, shapes, sizes):
    """Views of consecutive blocks of the 1-D ``flat``, shaped ``shapes`` (sizes ``sizes``)."""
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(flat[start:start + size].reshape(shape))
        start += size
    return views


# name -> (class, default keyword arguments)
OPTIMIZERS = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (Adam, {}),
}
_CLASSES = {"sgd": SGD, "adam": Adam}


def get_optimizer(optimizer, lr=None, schedule=None, weight_decay=None):
    """An :class:`Optimizer` from a name or an instance.

    Parameters
    ----------
    optimizer : str or Optimizer
        ``"sgd"``, ``"momentum"`` (SGD, μ = 0.9), ``"nesterov"`` (SGD, μ = 0.9, Nesterov),
        ``"adam"``, or an instance (used as is, with the overrides below applied to it).
    lr, schedule, weight_decay : optional
        Override the optimizer's own when given.
    """
    if isinstance(optimizer, Optimizer):
        opt = optimizer
    elif isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        cls, kwargs = OPTIMIZERS[optimizer.lower()]
        opt = cls(**kwargs)
    else:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)} or an Optimizer "
                         f"instance, got {optimizer!r}")
    if lr is not None:
        opt.lr = float(check_positive(lr, "lr"))
    if schedule is not None:
        opt.schedule = get_schedule(schedule)
    if weight_decay is not None:
        opt.weight_decay = float(check_positive(weight_decay, "weight_decay", allow_zero=True))
    return opt


def from_config(config):
    """Rebuild an optimizer from :meth:`Optimizer.get_config` (without its state)."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in _CLASSES:
        raise ValueError(f"optimizer config name must be one of {tuple(_CLASSES)}, got {name!r}")
    return _CLASSES[name](**config)
