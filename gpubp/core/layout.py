"""The flat parameter layout and the row-block workspaces.

All parameters live in one vector ``θ``: ``W^1`` (row-major), ``b^1``, ``W^2``, ``b^2``, ...
back to back; gradients and optimizer states share the layout. Activations and errors are
consecutive ``(P, n_l)`` blocks of one buffer each.
"""


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
