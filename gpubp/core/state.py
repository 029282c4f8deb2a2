"""A Network's state for :mod:`pickle` and :mod:`copy`: host copies of θ, the backend by name.

:class:`~gpubp.core.network.Network` uses :func:`getstate` and :func:`setstate` as its
``__getstate__`` and ``__setstate__``, so a network round-trips exactly through joblib,
multiprocessing and ``copy.deepcopy`` on every backend.
"""

import copy

import numpy as np

from gpubp.backends import get_backend, resolve_device
from gpubp.backends.base import BACKEND_OPTIONS

# rebuilt by __setstate__: the backend (it holds modules), the parameter buffers and
# their views (the values travel as host copies), and the workspaces (grown lazily)
REBUILT = frozenset((
    "backend", "theta", "nabla_theta", "W", "b", "nabla_w", "nabla_b", "layer_slices",
    "_capacity", "activations", "zs", "deltas", "targets", "_sparse_a0", "_weighted",
    "_activations_flat", "_deltas_flat", "_row_weights", "_host_x", "_host_y",
    "_epoch_layout"))


def getstate(self):
    """What :mod:`pickle` and :mod:`copy` keep: every attribute but the backend object
    and the buffers, the parameters and gradients as host (NumPy) copies of ``theta``
    and ``nabla_theta`` (through ``backend.to_host``: a GPU network pickles too), and the
    backend as its name and options. The generator is copied, so a copy shuffles as the
    original would, independently of it."""
    be = self.backend
    state = {k: v for k, v in self.__dict__.items() if k not in REBUILT}
    state["rng"] = copy.deepcopy(self.rng)
    state["sizes"], state["hidden"] = list(self.sizes), list(self.hidden)
    state["activation_names"] = list(self.activation_names)
    state["_backend"] = (be.name, {key: getattr(be, key)
                                   for key in BACKEND_OPTIONS.get(be.name, {})})
    state["_theta"] = be.to_host(self.theta)
    state["_nabla_theta"] = be.to_host(self.nabla_theta)
    return state


def setstate(self, state):
    """Rebuild the backend (``device="cuda"`` where no GPU is usable falls back to the
    CPU with a warning, as the constructor does) and copy the parameters onto it;
    workspaces are allocated again on first use."""
    state = dict(state)
    name, options = state.pop("_backend")
    theta, nabla_theta = state.pop("_theta"), state.pop("_nabla_theta")
    self.__dict__.update(state)
    if self.device == "cuda":
        self.device = resolve_device("cuda", fallback=True)
        if self.device != "cuda":
            name = None
    self.backend = get_backend(self.device, name, **options)
    self._allocate_parameters()
    self.backend.to_device(np.ascontiguousarray(theta, self.dtype), out=self.theta)
    self.backend.to_device(np.ascontiguousarray(nabla_theta, self.dtype),
                           out=self.nabla_theta)
