"""Backends: where the arrays live and which kernels run on them.

A :class:`~gpubp.backends.base.Backend` holds an array module ``xp`` (NumPy or CuPy)
and the kernels of the contract. :class:`gpubp.Network` asks its backend for buffers and
kernels and contains no NumPy-only code path; the backend never knows about networks.
"""

from gpubp.backends.base import Backend
from gpubp.backends.devices import get_backend, resolve_device

__all__ = ["Backend", "get_backend", "resolve_device"]
