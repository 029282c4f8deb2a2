"""The checks of :class:`~gpubp.core.network.Network`'s arguments: layers and data."""

import numbers

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
