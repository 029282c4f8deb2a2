"""The checks of :class:`~gpubp.core.network.Network`'s arguments: layers and data."""

import numbers

import numpy as np

from gpubp import activations
from gpubp.data.inputs import check_sparse_X, is_sparse
from gpubp.data.validation import check_X, check_Y


def check_sizes(sizes):
    """``sizes`` as a list of positive ints, at least an input and an output width."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes}")
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"sizes must hold integers, got {n!r} in {sizes}")
        if n < 1:
            raise ValueError(f"sizes must hold positive widths, got {n} in {sizes}")
    return [int(n) for n in sizes]


def check_hidden(hidden, n_hidden):
    """The hidden activations, one name per hidden layer (one name is repeated)."""
    if isinstance(hidden, str):
        return [activations.check_activation(hidden, "hidden", activations.HIDDEN)] * n_hidden
    if not hasattr(hidden, "__iter__"):
        raise TypeError(f"hidden must be an activation name, one of {activations.HIDDEN}, or "
                        f"a list of them (one per hidden layer), got {hidden!r}")
    hidden = list(hidden)
    if len(hidden) != n_hidden:
        names = "name" if n_hidden == 1 else "names"
        raise ValueError(f"hidden must be one name or {n_hidden} {names} (a list, one per "
                         f"hidden layer of sizes), got {len(hidden)}: {hidden}")
    return [str(activations.check_activation(h, f"hidden[{i}]", activations.HIDDEN))
            for i, h in enumerate(hidden)]


def check_inputs(net, X, name="X"):
    """``X`` checked against ``net`` (its input width and dtype; SciPy sparse stays sparse);
    errors name it ``name``."""
    if is_sparse(X):
        return check_sparse_X(X, net.sizes[0], net.dtype, name)
    return check_X(X, net.sizes[0], net.dtype, name)


def check_inputs_and_targets(net, X, Y, names=("X", "Y")):
    """``(X, Y)`` checked against ``net``: ``Y`` as ``(P, n_L)`` targets of its loss;
    errors name them ``names``."""
    X = check_inputs(net, X, names[0])
    return X, check_Y(Y, X.shape[0], net.sizes[-1], net.loss_name, net.dtype, names[1])


def check_seed(seed):
    """``seed``: a non-negative integer or None (NumPy's generators refuse the rest)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return seed


def check_flag(value, name):
    """A bool (NumPy's too), or a TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_params(W, b, sizes, dtype):
    """``W`` then ``b`` (lists of ``L`` arrays shaped like the layers') cast to ``dtype``.

    Raises
    ------
    ValueError
        A wrong count or shape, a NaN or infinite value, or one that overflows ``dtype``.
    TypeError
        Values that are not real numbers.
    """
    L, casts = len(sizes) - 1, []
    for name, given, shapes in (("W", W, list(zip(sizes[:-1], sizes[1:]))),
                                ("b", b, [(n,) for n in sizes[1:]])):
        if not isinstance(given, (list, tuple)) or len(given) != L:
            got = len(given) if isinstance(given, (list, tuple)) else type(given).__name__
            raise ValueError(f"{name} must be a list of {L} arrays, got {got}")
        for l, (arr, shape) in enumerate(zip(given, shapes)):
            casts.append(_check_param(np.asarray(arr), f"{name}[{l}]", shape, dtype))
    return casts


def _check_param(arr, name, shape, dtype):
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    with np.errstate(over="ignore"):
        cast = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(cast).all():
        raise ValueError(
            f"{name} holds values that overflow {dtype.name} (largest magnitude "
            f"{float(np.abs(arr).max()):.3g}, {dtype.name} holds up to "
            f"{float(np.finfo(dtype).max):.3g})")
    return cast
