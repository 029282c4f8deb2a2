"""Numba's cache stamps of the CPU kernels, extended with every source compiled into them.

Numba stamps a cached function with its own source file only (its modification time and
size), yet the compiled CPU loops also freeze in the integer codes of the tables
(:mod:`gpubp.activations`, :mod:`gpubp.losses`), and :func:`gpubp.kernels.cpu_epoch.train_epoch`
compiles in the loops of :mod:`gpubp.kernels.cpu` and :mod:`gpubp.kernels.cpu_update`.
After a change there, ``__pycache__`` would keep serving the old machine code (an edited
activation code once turned tanh into the identity). :func:`stamp` extends the stamp with
:func:`source_digest`; Numba compares stamps for equality, so any change recompiles.
"""

import hashlib
import importlib.util

# The modules whose source the compiled CPU loops depend on (found by path: importing
# them here would make this module part of the cycle it serves).
SOURCES = ("gpubp.kernels.cpu", "gpubp.kernels.cpu_update", "gpubp.activations",
           "gpubp.losses")


def source_digest():
    """SHA-256 of the sources in :data:`SOURCES`, in that order."""
    h = hashlib.sha256()
    for name in SOURCES:
        with open(importlib.util.find_spec(name).origin, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def stamp(*dispatchers):
    """Extend the cache stamp of each ``@njit(cache=True)`` dispatcher with the digest."""
    digest = source_digest()
    for dispatcher in dispatchers:
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):
            cache_file._source_stamp = (cache_file._source_stamp, digest)
