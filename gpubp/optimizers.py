"""Optimizers: small objects that apply one fused update kernel per parameter.

An optimizer keeps its state (momentum buffers, Adam moments) on the network's backend and
calls the backend's ``sgd_update`` or ``adam_update`` kernel, so each training step
writes every parameter once. ``Network.fit(optimizer=...)`` takes a name or an instance.
"""

import numbers

from gpubp.validation import check_positive


class Optimizer:
    """Base class: a learning rate, optional L2 weight decay and per-parameter state.

    Parameters
    ----------
    lr : float
        Learning rate ``η``.
    weight_decay : float
        L2 penalty ``λ``: the update uses ``∇C + λ θ`` (``λ/2 ‖θ‖²`` added to the cost).
    """

    name = "optimizer"
    state_names = ()

    def __init__(self, lr=0.1, weight_decay=0.0):
        self.lr = float(check_positive(lr, "lr"))
        self.weight_decay = float(check_positive(weight_decay, "weight_decay", allow_zero=True))
        self.iterations = 0
        self.state = None

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr}, weight_decay={self.weight_decay})"

    def initialize(self, backend, params):
        """Allocate zeroed state buffers like each parameter, on ``backend``."""
        self.state = {
            key: [backend.zeros(p.shape, p.dtype) for p in params] for key in self.state_names
        }

    def current_lr(self):
        """The learning rate for the next step (schedules override this)."""
        return self.lr

    def step(self, backend, params, grads):
        """Update every parameter in place from its gradient."""
        if self.state is None:
            self.initialize(backend, params)
        self.iterations += 1
        lr = self.current_lr()
        for i, (param, grad) in enumerate(zip(params, grads)):
            self._update(backend, i, param, grad, lr)

    def _update(self, backend, i, param, grad, lr):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, PyTorch's convention.

    ``v ← μ v + g``; ``θ ← θ − η v`` (or ``θ ← θ − η (g + μ v)`` with Nesterov), where
    ``g = ∇C + λ θ``. With ``momentum=0`` this is the plain ``θ ← θ − η g`` of the
    derivation.
    """

    name = "sgd"

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = float(check_positive(momentum, "momentum", allow_zero=True))
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and not self.momentum:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.state_names = ("velocity",) if self.momentum else ()

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay})")

    def _update(self, backend, i, param, grad, lr):
        velocity = self.state["velocity"][i] if self.momentum else None
        backend.sgd_update(param, grad, velocity, lr, self.momentum, self.nesterov,
                           self.weight_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias-corrected moments and L2 weight decay."""

    name = "adam"
    state_names = ("m", "v")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        for value, arg in ((beta1, "beta1"), (beta2, "beta2")):
            if not isinstance(value, numbers.Real) or not 0 <= value < 1:
                raise ValueError(f"{arg} must be in [0, 1), got {value!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = float(check_positive(eps, "eps"))

    def __repr__(self):
        return (f"Adam(lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")

    def _update(self, backend, i, param, grad, lr):
        backend.adam_update(param, grad, self.state["m"][i], self.state["v"][i], lr,
                            self.beta1, self.beta2, self.eps, self.iterations, self.weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get_optimizer(optimizer, lr=None):
    """An :class:`Optimizer` from a name (with ``lr`` when given) or an instance."""
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            optimizer.lr = float(check_positive(lr, "lr"))
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        cls = OPTIMIZERS[optimizer.lower()]
        return cls() if lr is None else cls(lr=lr)
    raise ValueError(
        f"optimizer must be one of {tuple(OPTIMIZERS)} or an Optimizer instance, got {optimizer!r}"
    )
