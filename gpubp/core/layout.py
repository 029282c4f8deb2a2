"""The flat parameter layout and the row-block workspaces.

All parameters live in one vector ``θ``: ``W^1`` (row-major), ``b^1``, ``W^2``, ``b^2``, ...
back to back; gradients and optimizer states share the layout. Activations and errors are
consecutive ``(P, n_l)`` blocks of one buffer each.
"""

import numpy as np

from gpubp import activations


def layer_views(flat, sizes):
    """Views ``W^l`` (n_{l-1}, n_l) and ``b^l`` (n_l,) of a 1-D vector laid out as ``theta``.

    Returns
    -------
    W, b : list of arrays
        ``L`` views each, into ``flat`` (a NumPy or backend array, shape (N,)).
    """
    W, b, start = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w_end = start + n_in * n_out
        W.append(flat[start:w_end].reshape(n_in, n_out))
        b.append(flat[w_end:w_end + n_out])
        start = w_end + n_out
    return W, b


def row_blocks(flat, P, widths):
    """Views ``(P, n)`` of consecutive blocks of the 1-D ``flat``, one per width ``n``."""
    blocks, start = [], 0
    for n in widths:
        blocks.append(flat[start:start + P * n].reshape(P, n))
        start += P * n
    return blocks


def allocate_parameters(net):
    """Give ``net`` one flat buffer for all parameters, one for all gradients, per-layer
    views of both, and empty workspaces (grown by the first batch).

    ``theta`` holds ``W^1`` (row-major), ``b^1``, ``W^2``, ``b^2``, ... back to back, and
    ``nabla_theta`` the gradients in the same order, so that an optimizer updates every
    parameter in one fused call and a data-parallel reduction sends one message; a
    layer's block ``layer_slices[l]`` can go as soon as backpropagation produces it.
    """
    be, dt = net.backend, net.dtype
    shapes = list(zip(net.sizes[:-1], net.sizes[1:]))
    ends = np.cumsum([n_in * n_out + n_out for n_in, n_out in shapes]).tolist()
    net.layer_slices = [slice(start, end) for start, end in zip([0] + ends[:-1], ends)]
    net.theta = be.empty((ends[-1],), dt)
    net.nabla_theta = be.zeros((ends[-1],), dt)
    net.W, net.b = layer_views(net.theta, net.sizes)
    net.nabla_w, net.nabla_b = layer_views(net.nabla_theta, net.sizes)
    net._capacity = 0  # rows of the workspaces below
    net.activations = None  # a^0 .. a^L, each (capacity, n_l)
    net.zs = None  # z^l at [l] for the layers whose g' needs it, else None; [0] unused
    net.deltas = None  # δ^1 .. δ^L at [1..L]; [0] unused
    net.targets = None  # y, (capacity, n_L)
    net._sparse_a0 = None  # the loaded batch when X is sparse (a^0 is then unused)
    net._weighted = False  # whether the loaded rows carry weights (_row_weights)


def initial_parameters(rng, sizes, activation_names, dtype, init=None):
    """Initial ``W`` (each layer's by ``init``, a rule of :data:`gpubp.activations.INITS` or
    a callable ``init(shape, rng)``, or by its activation's rule when None, from ``rng``)
    and zero ``b``."""
    W = []
    for l, (n_in, n_out, g) in enumerate(zip(sizes[:-1], sizes[1:], activation_names)):
        w = activations.init_weights(rng, n_in, n_out, g, dtype, init)
        if callable(init):  # the user's: a clear error before set_params sees it
            w = np.asarray(w)
            if w.shape != (n_in, n_out) or w.dtype.kind not in "biuf":
                raise ValueError(f"init must return a real array of the shape it is given, "
                                 f"{(n_in, n_out)} for W[{l}]; got {w.dtype} of shape "
                                 f"{w.shape}")
        W.append(w)
    return W, [np.zeros(n, dtype=dtype) for n in sizes[1:]]
