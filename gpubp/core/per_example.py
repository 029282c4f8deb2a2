"""Every term of the sum: each example's gradient, its norm, input gradients, Jacobians.

The gradient of the mean cost is a sum over the P examples (``DESIGN.md`` §1),
``∂C/∂W^l = (1/P) Σ_p outer(a_p^{l-1}, P δ_p^l)``, and backpropagation already holds the
factors of every term: ``P δ_p^l`` is the error of example p's own cost ``c_p`` (the
``δ^l`` of a batch carry the ``1/P`` of the mean). Each term is rank one, so its norm
costs no product:

    ‖∂c_p/∂θ^l‖ = ‖[a_p^{l-1}, 1]‖ · ‖P δ_p^l‖        (the bias: the weight of an input 1)
    ‖∂c_p/∂θ‖   = sqrt(Σ_l ‖∂c_p/∂θ^l‖²)

:func:`own_deltas` runs the forward pass and the δ recursion of
:func:`gpubp.core.backprop.backward` without its weight-gradient products, and everything
here is written with the backend's kernels and its array module ``xp`` (NumPy or CuPy),
so it runs on every backend. The clipped step of differentially private SGD
(:func:`clipped_step`) scales row p of every ``δ^l`` by ``min(1, C/‖g_p‖)`` before the
weight-gradient products, as Opacus defines the clipping, so that clipping costs one row
scaling rather than P gradients.

:class:`PerExample` is the part of :class:`~gpubp.core.network.Network` that exposes them.
"""

import numpy as np

from gpubp import activations
from gpubp.core import backprop

MAX_BYTES = 2 ** 30  # per_example_gradients refuses a (P, N) result larger than this


def own_deltas(net, P, drops=None):
    """``δ^L .. δ^1`` of the loaded, forwarded batch, without the weight gradients:
    :func:`gpubp.core.backprop.backpropagate` with no layer gradient due.

    The errors are those of the mean cost (each carries ``1/P``); ``drops``: the
    training step's dropout of the forward pass (None: the whole network). Returns the
    mean cost.
    """
    a, delta, L, rows = net.activations, net.deltas, net.L, slice(0, P)
    cost = backprop.output_error(net, a[L][rows], net.targets[rows], delta[L][rows])
    backprop.backpropagate(net, a, net.zs, delta, rows, lambda l: None, drops=drops)
    return cost


def _input_squares(net, l, P):
    """``‖a_p^{l-1}‖² + 1`` (P,) of the loaded batch (a sparse ``a^0`` stays sparse)."""
    xp = net.backend.xp
    if l == 1 and net._sparse_a0 is not None:
        a0 = net._sparse_a0
        return xp.asarray(a0.multiply(a0).sum(axis=1)).ravel().astype(net.dtype) + 1
    a = net.activations[l - 1][:P]
    return xp.einsum("pi,pi->p", a, a) + 1


def layer_norms(net, P):
    """``(L, P)`` backend array: ``‖∂c_p/∂θ^l‖`` of every example's own cost, from the
    loaded batch's activations and errors (after :func:`own_deltas`)."""
    xp = net.backend.xp
    norms = xp.empty((net.L, P), dtype=net.dtype)
    for l in range(1, net.L + 1):
        d = net.deltas[l][:P]
        norms[l - 1] = xp.sqrt(_input_squares(net, l, P) * xp.einsum("pj,pj->p", d, d)) * P
    return norms


def _passes(net, X, Y):
    """Load, forward and :func:`own_deltas` chunk by chunk; yields ``(rows, P)``."""
    for rows in net._chunks(X.shape[0], X, Y):
        P = backprop.load(net, X[rows], Y[rows])
        backprop.forward(net, P)
        own_deltas(net, P)
        yield rows, P


def per_example_gradient_norms(net, X, Y, per_layer=False):
    """Norms of every example's gradient ``∂c_p/∂θ`` (its own cost, not divided by P).

    One forward and one backward pass (without the weight-gradient products); no
    ``(P, N)`` array is made.

    Parameters
    ----------
    X : array-like, shape (P, n_0)
        SciPy sparse too.
    Y : array-like, shape (P, n_L), or (P,) integer labels for classifiers
    per_layer : bool
        Return each layer's norm ``‖∂c_p/∂(W^l, b^l)‖`` instead of the total.

    Returns
    -------
    ndarray, shape (P,), or (P, L) with ``per_layer``
    """
    if not isinstance(per_layer, (bool, np.bool_)):
        raise TypeError(f"per_layer must be True or False, got {per_layer!r}")
    X, Y = net._check_XY(X, Y)
    out = np.empty((X.shape[0], net.L), dtype=net.dtype)
    for rows, P in _passes(net, X, Y):
        out[rows] = net.backend.to_host(layer_norms(net, P)).T
    return out if per_layer else np.sqrt(np.einsum("pl,pl->p", out, out))


def per_example_gradients(net, X, Y, max_bytes=MAX_BYTES):
    """Every example's gradient ``∂c_p/∂θ`` (its own cost), laid out as ``net.theta``.

    Parameters
    ----------
    X : array-like, shape (P, n_0)
    Y : array-like, shape (P, n_L), or (P,) integer labels for classifiers
    max_bytes : int
        The largest result made; a larger one is a ValueError naming its size.

    Returns
    -------
    ndarray, shape (P, N)
        Row p is example p's gradient; its mean over the rows is :meth:`gradients`'s.
    """
    X, Y = net._check_XY(X, Y)
    N, xp = net.theta.size, net.backend.xp
    need = X.shape[0] * N * net.dtype.itemsize
    if need > max_bytes:
        raise ValueError(f"per_example_gradients: {X.shape[0]} examples x {N} parameters "
                         f"of {net.dtype.name} need {need / 2**20:.1f} MiB, more than "
                         f"max_bytes={max_bytes} ({max_bytes / 2**20:.1f} MiB); pass fewer "
                         f"rows, a larger max_bytes, or use per_example_gradient_norms")
    out = np.empty((X.shape[0], N), dtype=net.dtype)
    for rows, P in _passes(net, X, Y):
        for l, block in enumerate(net.layer_slices):
            d = net.deltas[l + 1][:P] * P
            a = net.activations[l][:P] if l or net._sparse_a0 is None else \
                xp.asarray(net._sparse_a0.toarray())
            n_w = a.shape[1] * d.shape[1]
            out[rows, block.start:block.start + n_w] = net.backend.to_host(
                (a[:, :, None] * d[:, None, :]).reshape(P, n_w))
            out[rows, block.start + n_w:block.stop] = net.backend.to_host(d)
    return out


def input_gradients(net, X, Y):
    """``∂c_p/∂x_p``: each example's own cost against its own inputs, ``P δ^1 W^{1 T}``.

    Returns
    -------
    ndarray, shape (P, n_0)
    """
    X, Y = net._check_XY(X, Y)
    out = np.empty(X.shape, dtype=net.dtype)
    for rows, P in _passes(net, X, Y):
        out[rows] = net.backend.to_host(net.backend.xp.matmul(net.deltas[1][:P],
                                                              net.W[0].T) * P)
    return out


def _derivative(net, l, P):
    """``g'`` of layer ``l`` (1-based), ``(P, n_l)``: the backend's own ``δ ⊙ g'`` kernel
    applied to ones (through ``a``, or the kept ``z`` of gelu and silu), so that it is
    the backprop's g'."""
    be, a = net.backend, net.activations[l][:P]
    s = a if net.zs[l] is None else net.zs[l][:P]
    d = be.xp.ones(a.shape, dtype=net.dtype)
    be.hidden_delta(d, s, net.activation_names[l - 1], slope=backprop.slope(net))
    return d


def _output_jacobian(net, P):
    """``∂a^L_p/∂z^L_p``, ``(P, n_L, n_L)``."""
    xp, a = net.backend.xp, net.activations[net.L][:P]
    if net.output == "softmax":  # diag(a) − a aᵀ
        J = -a[:, :, None] * a[:, None, :]
        J[:, np.arange(a.shape[1]), np.arange(a.shape[1])] += a
        return J
    g = a if net.output == "exp" else _derivative(net, net.L, P)
    assert net.output == "exp" or net.output in activations.FROM_OUTPUT, net.output
    J = xp.zeros((P, a.shape[1], a.shape[1]), dtype=net.dtype)
    J[:, np.arange(a.shape[1]), np.arange(a.shape[1])] = g
    return J


def jacobian(net, X):
    """``∂a^L_p/∂x_p`` of every example, batched: ``J_p = g_o'·W^{LT}·g'·…·W^{1T}``.

    Returns
    -------
    ndarray, shape (P, n_L, n_0)
    """
    X = net._check_X(X)
    xp = net.backend.xp
    out = np.empty((X.shape[0], net.sizes[-1], net.sizes[0]), dtype=net.dtype)
    for rows in net._chunks(X.shape[0], X):
        P = backprop.load(net, X[rows])
        backprop.forward(net, P)
        J = _output_jacobian(net, P)
        for l in range(net.L, 0, -1):
            if l < net.L:
                J *= _derivative(net, l, P)[:, None, :]
            J = xp.matmul(J, net.W[l - 1].T)
        out[rows] = net.backend.to_host(J)
    return out


def hidden_activations(net, X):
    """The hidden layers' activations ``[a^1, …, a^{L-1}]``, each ``(P, n_l)``."""
    X = net._check_X(X)
    out = [np.empty((X.shape[0], n), dtype=net.dtype) for n in net.sizes[1:-1]]
    for rows in net._chunks(X.shape[0], X):
        P = backprop.load(net, X[rows])
        backprop.forward(net, P)
        for l, block in enumerate(out, start=1):
            block[rows] = net.backend.to_host(net.activations[l][:P])
    return out


class PerExample:
    """The per-example methods of :class:`~gpubp.core.network.Network` (this module's
    functions, the network first)."""

    per_example_gradient_norms = per_example_gradient_norms
    per_example_gradients = per_example_gradients
    input_gradients = input_gradients
    jacobian = jacobian
    hidden_activations = hidden_activations
