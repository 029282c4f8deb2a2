"""Checks of the inputs that only some entry points take: SciPy sparse ``X`` and per-example
weights. Each returns the value as the network uses it or raises a ``ValueError`` or
``TypeError`` naming the argument, what was expected and what was received."""

import numbers

import numpy as np

try:
    import scipy.sparse as scipy_sparse
except ImportError:  # pragma: no cover - SciPy is optional for gpubp itself
    scipy_sparse = None


def is_sparse(X):
    """Whether ``X`` is a SciPy sparse matrix or array."""
    return scipy_sparse is not None and scipy_sparse.issparse(X)


def check_sparse_X(X, n_inputs, dtype, name="X"):
    """A sparse ``X`` of shape ``(P, n_inputs)`` as CSR of ``dtype`` with finite entries.

    CSR because mini-batches take rows (CSC is converted once, here).
    """
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != n_inputs:
        raise ValueError(f"{name} must have shape (P >= 1, {n_inputs}), got {X.shape}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    source = X.tocsr()
    with np.errstate(over="ignore"):
        X = source.astype(dtype, copy=False)
    if not np.isfinite(X.data).all():
        if np.isfinite(source.data).all():
            raise ValueError(f"{name} holds values that overflow {np.dtype(dtype).name} "
                             f"(largest magnitude {float(np.abs(source.data).max()):.3g}): "
                             f"scale the data or build the network with dtype='float64'")
        raise ValueError(f"{name} must be finite, got NaN or infinite stored values")
    return X


def check_sample_weight(sample_weight, P, name="sample_weight"):
    """Per-example weights: None, a number (every row alike) or ``(P,)`` finite values >= 0
    with a positive sum; returned as a float64 ``(P,)`` array or None."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        sample_weight = np.full(P, float(sample_weight))
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {w.dtype}")
    if w.shape != (P,):
        raise ValueError(f"{name} must have shape ({P},), one weight per example, got {w.shape}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must hold finite values >= 0, got "
                         f"{w[~np.isfinite(w) | (w < 0)][:3].tolist()}...")
    if not w.sum() > 0:
        raise ValueError(f"{name} must have a positive sum, got {float(w.sum())!r}")
    return w
