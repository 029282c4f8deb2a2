"""Optimizers: small objects around the backend's fused updates.

An optimizer keeps its state (momentum buffers, Adam moments) on the network's backend, one
flat buffer per state name laid out like ``Network.theta``, and calls the backend's
``sgd_update``, ``adam_update`` or ``rmsprop_update`` kernel once over the whole parameter
vector, so each training step writes every parameter once, in one fused call, on every
backend (apex's and PyTorch's multi-tensor updates). ``Network.fit(optimizer=...)`` takes a
name (``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``) or
an instance; ``schedule=`` takes a name of :mod:`gpubp.optim.schedules` or a ``Schedule``.

The learning rate changes once per epoch (``fit`` calls :meth:`Optimizer.start_epoch`), or
at every step with a per-step schedule (warm-up, one-cycle). The base class
(:mod:`gpubp.optim.base`) also clips the flat gradient before a step
(``fit(clip_norm=..., clip_value=...)``). Every optimizer can export its hyperparameters
(:meth:`Optimizer.get_config`) and its state as host arrays (:meth:`Optimizer.state_arrays`)
for checkpoints, and take them back exactly.
"""

import math
import numbers

from gpubp.data.validation import check_positive
from gpubp.kernels.reference import AdamStep, RMSpropStep
from gpubp.optim.base import Optimizer, _views  # noqa: F401 - re-exported: the optimizers' one home
from gpubp.optim.schedules import get_schedule


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
    _elementwise = True

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
    _elementwise = True
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

class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019), PyTorch's ``torch.optim.AdamW``: decoupled decay.

    Each step first shrinks every parameter, ``θ ← (1 − η λ) θ``, then takes Adam's step
    on the gradient alone: the decay is not scaled by ``1/√v̂`` as an L2 term in the
    gradient would be. Like ``torch.optim.AdamW(net.parameters(), weight_decay=λ)``,
    every parameter decays, the biases too (PyTorch users who exempt the biases build two
    parameter groups; there is one here). One fused kernel call over the flat θ.

    Parameters
    ----------
    lr : float
    beta1, beta2, eps : float
    weight_decay : float
        ``λ``, decoupled (PyTorch's default 1e-2).
    schedule : str, Schedule or None
    """

    name = "adamw"

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2,
                 schedule=None):
        super().__init__(lr, beta1, beta2, eps, weight_decay, schedule)

    def _hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _update(self, backend, param, grad, state, lr, weight_decay=None):
        backend.adam_update(param, grad, state["m"], state["v"],
                            AdamStep(lr, self.beta1, self.beta2, self.eps, self.iterations,
                                     0.0, self.weight_decay))


class RMSprop(Optimizer):
    """RMSprop, PyTorch's ``torch.optim.RMSprop`` (momentum and centered options).

    ``s ← α s + (1 − α) g²``; centered: ``ḡ ← ḡ + (1 − α)(g − ḡ)``, ``d = √(s − ḡ²) + ε``,
    else ``d = √s + ε``; ``θ ← θ − η g / d``, or with momentum ``b ← μ b + g / d``,
    ``θ ← θ − η b``; ``g = ∇C + λ θ``. One fused kernel call over the flat θ.

    Parameters
    ----------
    lr : float
        PyTorch's default 1e-2.
    alpha : float
        Smoothing constant in ``[0, 1)``.
    eps : float
    weight_decay : float
        L2 penalty ``λ`` added to the gradient.
    momentum : float
        ``μ`` in ``[0, 1)``.
    centered : bool
        Normalise by the estimated variance of the gradient rather than its raw second
        moment.
    schedule : str, Schedule or None
    """

    name = "rmsprop"
    _elementwise = True

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, schedule=None):
        super().__init__(lr, weight_decay, schedule)
        for value, arg in ((alpha, "alpha"), (momentum, "momentum")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
                raise ValueError(f"{arg} must be in [0, 1), got {value!r}")
        if not isinstance(centered, bool):
            raise TypeError(f"centered must be True or False, got {centered!r}")
        self.alpha, self.momentum, self.centered = float(alpha), float(momentum), centered
        self.eps = float(check_positive(eps, "eps"))
        self.state_names = ("square_avg",) + (("momentum_buffer",) if self.momentum else ()) \
            + (("grad_avg",) if centered else ())

    def _hyperparameters(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered}

    def _update(self, backend, param, grad, state, lr, weight_decay=None):
        decay = self.weight_decay if weight_decay is None else weight_decay
        backend.rmsprop_update(param, grad, state["square_avg"], state.get("momentum_buffer"),
                               state.get("grad_avg"),
                               RMSpropStep(lr, self.alpha, self.eps, decay, self.momentum,
                                           self.centered))


# name -> (class, default keyword arguments)
OPTIMIZERS = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (Adam, {}),
    "adamw": (AdamW, {}),
    "rmsprop": (RMSprop, {}),
}
_CLASSES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get_optimizer(optimizer, lr=None, schedule=None, weight_decay=None, clip=None):
    """An :class:`Optimizer` from a name or an instance.

    Parameters
    ----------
    optimizer : str or Optimizer
        ``"sgd"``, ``"momentum"`` (SGD, μ = 0.9), ``"nesterov"`` (SGD, μ = 0.9, Nesterov),
        ``"adam"``, ``"adamw"``, ``"rmsprop"``, or an instance (used as is, with the
        overrides below applied to it).
    lr, schedule, weight_decay : optional
        Override the optimizer's own when given.
    clip : (clip_norm, clip_value) or None
        :meth:`Optimizer.set_clipping`'s arguments, when given.
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
    if clip is not None:
        opt.set_clipping(*clip)
    return opt


def from_config(config):
    """Rebuild an optimizer from :meth:`Optimizer.get_config` (without its state)."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in _CLASSES:
        raise ValueError(f"optimizer config name must be one of {tuple(_CLASSES)}, got {name!r}")
    clip = config.pop("clip_norm", None), config.pop("clip_value", None)
    return _CLASSES[name](**config).set_clipping(*clip)
