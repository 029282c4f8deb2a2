"""Backpropagation over the Backend contract, written once for every backend.

This is the whole algorithm of ``DESIGN.md`` section 1:

    forward    z^l = a^{l-1} W^l + b^l,  a^l = g(z^l)            (l = 1..L, a^0 = X)
    output     δ^L = (1/P) ∂c/∂a^L ⊙ g_o'(z^L)                    (a^L − y)/P when canonical
    hidden     δ^l = (δ^{l+1} W^{l+1 T}) ⊙ g'(z^l)
    gradients  ∂C/∂W^l = a^{l-1 T} δ^l,   ∂C/∂b^l = Σ_p δ^l_p
    update     θ ← θ − η ∂C/∂θ                                    (or momentum / Adam)

Each function takes the :class:`~gpubp.core.network.Network` first and is one of its
methods (``net._load``, ``net._forward``, ...); the scikit-learn solvers, the diagnostics
and the fit loop call them the same way. Everything array-shaped goes through the
:class:`~gpubp.backends.Backend`: this module never touches a device array with NumPy.
Workspaces (activations ``a^l``, errors ``δ^l``, gradients) are allocated once, for the
largest batch seen, and smaller batches use leading-row views of them, so a training step
allocates nothing.

A step reduces its gradient between backward and update through the protocol of
:mod:`gpubp.core.reduction`: :class:`~gpubp.core.reduction.Identity` for one process, a
strategy of :mod:`gpubp.distributed.reductions` for a data-parallel run.
"""

import numpy as np

from gpubp import activations
from gpubp.core import dropout
from gpubp.core.layout import layer_views, row_blocks
from gpubp.core.reduction import Identity
from gpubp.data.inputs import is_sparse


def workspace(net, P):
    """Make sure the workspaces hold ``P`` rows; grow (never shrink) them if needed.

    The activations ``a^0..a^L`` are consecutive blocks of one flat buffer, and so
    are the errors ``δ^1..δ^L``, each block ``(P, n_l)`` row-major: the leading-row
    views a smaller batch uses are contiguous, and the compiled CPU epoch
    (:mod:`gpubp.core.compiled`) reaches every layer through one buffer and its offsets.
    After them come the ``z^l`` of the layers whose ``g'`` needs ``z`` (gelu, silu, ...):
    ``net.zs[l]``, None for the other layers.
    """
    if P <= net._capacity:
        return
    be, dt = net.backend, net.dtype
    kept = kept_z_widths(net)
    net._activations_flat = be.empty((P * (sum(net.sizes) + sum(kept)),), dt)
    net._deltas_flat = be.empty((P * sum(net.sizes[1:]),), dt)
    blocks = row_blocks(net._activations_flat, P, net.sizes + [n for n in kept if n])
    net.activations = blocks[:net.L + 1]
    z_blocks = iter(blocks[net.L + 1:])
    net.zs = [None] + [next(z_blocks) if n else None for n in kept]
    net.deltas = [None] + row_blocks(net._deltas_flat, P, net.sizes[1:])
    net.targets = be.empty((P, net.sizes[-1]), dt)
    net._row_weights = be.empty((P,), dt)  # w_p of weighted rows (see load)
    net._host_x = np.empty((P, net.sizes[0]), dt)  # staging rows for shuffled batches
    net._host_y = np.empty((P, net.sizes[-1]), dt)
    net._capacity = P


def kept_z_widths(net):
    """``n_l`` for each layer ``l = 1..L`` that keeps ``z^l`` (its ``g'`` needs it), else 0."""
    return [n if activations.keeps_z(g) else 0
            for n, g in zip(net.sizes[1:], net.activation_names)]


def slope(net):
    """leaky_relu's slope for the kernels: ``net.negative_slope``, which is None only when
    no layer is leaky_relu, and then any float does (the other activations ignore it)."""
    return net.negative_slope or 0.0


def load(net, X, Y=None, index=None, weights=None):
    """Copy rows of host ``X`` (and ``Y``) into ``a^0`` (and ``y``); return the row count.

    ``index`` selects rows (a shuffled mini-batch); they are gathered into preallocated
    host staging buffers first, so that no step allocates and only the batch crosses
    to the device. A SciPy sparse ``X`` (CSR) stays sparse: its rows go to the device
    as a sparse matrix that the first layer multiplies (see :func:`forward`).
    ``weights`` (P_total,) are per-example weights ``s_p`` of the rows (see
    :func:`backward`); None weighs every row alike.
    """
    P = len(index) if index is not None else X.shape[0]
    workspace(net, P)
    net._sparse_a0 = None
    if is_sparse(X):  # fit keeps the order on the host for a sparse X
        host_index = index if index is None or isinstance(index, np.ndarray) else \
            net.backend.to_host(index)
        rows = X[host_index] if index is not None else X
        net._sparse_a0 = net.backend.sparse_to_device(rows)
        X = None
    for src, buf, dev in ((X, net._host_x, net.activations[0]),
                          (Y, net._host_y, net.targets)):
        if src is not None:
            # host arrays (a memory-mapped file's rows are read, not mapped), or the
            # device copies of backend.resident (fit on a GPU)
            net.backend.gather_rows(src, index, dev[:P], buf[:P])
    net._weighted = weights is not None
    if net._weighted:  # host weights and index, or both the backend's (fit on a GPU)
        net.backend.row_weights(weights, index, net._row_weights[:P])
    return P


def forward(net, P, drops=None):
    """Feed-forward over the first ``P`` rows of ``a^0``; returns the view ``a^L``.

    ``drops``: a training step's dropout, one :class:`~gpubp.kernels.dropout.Drop` (or
    None) per hidden layer (:mod:`gpubp.core.dropout`); None: the whole network."""
    propagate(net, net.activations, net.zs, slice(0, P), sparse_a0=net._sparse_a0,
              drops=drops)
    return net.activations[net.L][:P]


def propagate(net, a, zs, rows, sparse_a0=None, drops=None):
    """``z^l = a^{l-1} W^l + b^l``, ``a^l = g(z^l)`` for ``l = 1..L`` over ``rows``.

    Parameters
    ----------
    net : Network
    a : list of L + 1 arrays, shapes (P, n_l)
        The activation blocks, ``a[0]`` holding the inputs; ``a[1:]`` are written. The
        network's own workspace, or another one laid out the same way (the split step's
        blocks shared by the ranks of a machine).
    zs : list of L + 1 arrays or None
        Where ``z^l`` is kept, for the layers whose ``g'`` needs it (gelu, silu), laid
        out like ``a``; None for the others.
    rows : slice
        The rows to propagate (all of a batch, or a rank's share of it).
    sparse_a0 : sparse matrix or None
        The inputs of ``rows`` as a device sparse matrix, used in place of ``a[0]``.
    drops : list or None
        See :func:`forward`.
    """
    be = net.backend
    for l in range(1, net.L + 1):
        if l == 1 and sparse_a0 is not None:  # sparse a^0: a sparse x dense product
            be.sparse_matmul(sparse_a0, net.W[0], out=a[1][rows])
        else:
            be.matmul(a[l - 1][rows], net.W[l - 1], out=a[l][rows])  # z^l = a^{l-1} W^l
        drop = drops[l - 1] if drops is not None and l < net.L else None
        z_out = None if zs[l] is None else zs[l][rows]  # kept where g' needs z
        be.bias_activation(a[l][rows], net.b[l - 1], net.activation_names[l - 1],
                           slope=slope(net), z_out=z_out, dropout=drop)


def output_error(net, a_L, y, delta_L, scale=1.0, w=None):
    """``δ^L = scale · (1/P) ∂c/∂a^L ⊙ g_o'(z^L)`` in ``delta_L``; returns the mean cost.

    ``a_L``, ``y``, ``delta_L`` are (P, n_L) rows of one batch (or of a rank's share);
    ``scale`` turns the share's ``1/P`` into the ``1/P_global`` of the whole batch
    (exactly 1.0 skips the product); ``w`` (P,), the rows' weights ``s_p P / Σ s`` (see
    :func:`backward`), or None.
    """
    cost = net.backend.output_delta(a_L, y, net.output, net.loss_name, delta_L,
                                    net.loss_param, w)
    if scale != 1.0:
        delta_L *= scale
    return cost


def backpropagate(net, a, zs, delta, rows, layer_gradient, *, errors_first=False, drops=None):
    """From ``δ^L`` down: ``δ^{l-1} = (δ^l W^{l T}) ⊙ g'(z^{l-1})`` over ``rows``.

    Parameters
    ----------
    net : Network
    a, zs, delta : lists of arrays, shapes (P, n_l)
        Activation, kept-``z`` (see :func:`propagate`) and error blocks laid out like the
        network's workspace (``delta[0]`` unused); ``delta[L]`` holds ``δ^L``.
    rows : slice
        The rows whose errors are computed.
    layer_gradient : callable
        ``layer_gradient(l)`` for ``l = L..1``, once ``δ^l`` is complete: layer ``l``'s
        gradient is due.
    errors_first : bool
        Compute ``δ^{l-1}`` (which reads ``W^l``) before calling ``layer_gradient(l)``,
        so that the call may change ``W^l`` (the split step updates it in place). By
        default the gradient comes first, so that a reduction can start summing it
        while ``δ^{l-1}`` is computed. Both read only ``δ^l``: the order changes no digit.
    drops : list or None
        Those of :func:`forward`, whose masks enter each hidden δ.
    """
    be = net.backend
    for l in range(net.L, 0, -1):
        if not errors_first:
            layer_gradient(l)
        if l > 1:
            be.matmul(delta[l][rows], net.W[l - 1].T, out=delta[l - 1][rows])
            s = a[l - 1] if zs[l - 1] is None else zs[l - 1]  # g' from a or from z
            be.hidden_delta(delta[l - 1][rows], s[rows], net.activation_names[l - 2],
                            slope=slope(net), dropout=None if drops is None else drops[l - 2])
        if errors_first:
            layer_gradient(l)


def backward(net, P, reduction, drops=None):
    """Backpropagate from the loaded targets; fills ``nabla_w``/``nabla_b``, returns ``C``.

    ``reduction`` (:mod:`gpubp.core.reduction`) rescales ``δ^L`` by its ``delta_scale``
    (1.0 for one process: no product; ``1/P`` to ``1/P_global`` on the ranks of a
    data-parallel run) and is told as each layer's gradient is final, so that it can
    start summing it.

    With weighted rows the cost is ``C = Σ_p s_p c_p / Σ_p s_p``: the output kernel
    scales each row of the seed ``δ^L`` by ``w_p = s_p P / Σ s`` (it carries ``1/P``
    already) and each row's cost with it, and everything below it follows unchanged.
    ``drops``: those of :func:`forward`, whose masks enter each hidden δ.
    """
    be, a, delta, L = net.backend, net.activations, net.deltas, net.L
    rows = slice(0, P)
    w = net._row_weights[rows] if net._weighted else None
    cost = output_error(net, a[L][rows], net.targets[rows], delta[L][rows], w=w)
    if reduction.delta_scale != 1.0:
        delta[L][rows] *= reduction.delta_scale

    def layer_gradient(l):
        if l == 1 and net._sparse_a0 is not None:
            be.sparse_weight_bias_gradients(net._sparse_a0, delta[1][rows],
                                            net.nabla_w[0], net.nabla_b[0])
        else:
            be.weight_bias_gradients(a[l - 1][rows], delta[l][rows],
                                     net.nabla_w[l - 1], net.nabla_b[l - 1])
        reduction.layer_done(l - 1)

    backpropagate(net, a, net.zs, delta, rows, layer_gradient, drops=drops)
    return cost


def update(net, optimizer):
    """Apply ``optimizer`` to every parameter from ``nabla_theta``: one fused call."""
    optimizer.step(net.backend, net.params, net.grads, theta=net.theta,
                   nabla_theta=net.nabla_theta)


def count_correct(net, P):
    """Correct predictions of the last forward pass over ``P`` loaded rows (a backend
    scalar: no synchronisation)."""
    return net.backend.count_correct(net.activations[net.L][:P], net.targets[:P],
                                     net.loss_name)


def train_step(net, optimizer, X, Y, index, reduction, P_global=None, weights=None):
    """One gradient-descent step on a mini-batch; returns ``(cost, P)``.

    The step is load, forward, backward, ``reduction`` (see :mod:`gpubp.core.reduction`),
    update. The cost may be a backend scalar (a device array on CUDA): converting it to a
    float would synchronise, so callers accumulate it and convert once per epoch. The
    outputs ``a^L`` of the batch stay in the workspace (see :func:`count_correct`).

    The rows ``index`` of ``X`` (all of them when None) are this process's share, ``P``
    rows, of a global batch of ``P_global`` rows (default ``P``: one process); on the
    ranks of a data-parallel run a share may be empty, and then adds zeros to the sum.
    ``weights`` (P_total,) are the rows' sample weights (see :func:`load`).
    """
    P = len(index) if index is not None else X.shape[0]
    P_global = P if P_global is None else P_global
    reduction.begin(P, P_global)
    # this step's masks for this rank's rows (None without dropout), drawn on every rank
    # so that each counts every batch
    drops = dropout.step_drops(net, P_global)
    if P:
        load(net, X, Y, index, weights=weights)
        forward(net, P, drops)
        cost = backward(net, P, reduction, drops)
    else:  # no row of this batch here: add zeros to the sum
        cost = 0.0
        for l in range(net.L - 1, -1, -1):
            net.nabla_theta[net.layer_slices[l]] = 0
            reduction.layer_done(l)
    reduction.wait()
    reduction.update(optimizer)
    return cost, P


def cost_and_flat_gradient(net, X, Y, want_gradient, sample_weight=None, masks=None):
    """Full-batch cost and its gradient laid out as ``theta`` (a host array), computed
    chunk by chunk on the backend: each chunk's gradient is that of its own (weighted)
    mean, so it is reweighted by its share of the rows (or of the total weight).
    ``masks``: fixed dropout masks (:func:`gpubp.core.dropout.check_masks`), or None."""
    alone = Identity(net)
    P_total = X.shape[0]
    weight_total = P_total if sample_weight is None else float(sample_weight.sum())
    total = 0.0
    grad = np.zeros(net.theta.shape, net.dtype) if want_gradient else None
    for rows in net._chunks(P_total, X, Y):
        chunk_weights = None if sample_weight is None else sample_weight[rows]
        share = ((rows.stop - rows.start) if sample_weight is None
                 else float(chunk_weights.sum())) / weight_total
        if share == 0:
            continue  # rows of weight zero contribute nothing
        P = load(net, X[rows], Y[rows], weights=chunk_weights)
        drops = dropout.fixed_drops(net, masks, rows)
        forward(net, P, drops)
        total += float(backward(net, P, alone, drops)) * share
        if want_gradient:
            grad += net.backend.to_host(net.nabla_theta) * share
    return total, grad


def cost_and_gradients(net, X, Y, want_gradients, sample_weight=None, masks=None):
    """Mean (or ``sample_weight``-weighted mean) cost over all rows and, optionally,
    its exact gradient as host arrays ``dW``, ``db`` (with fixed dropout ``masks``)."""
    cost, grad = cost_and_flat_gradient(net, X, Y, want_gradients, sample_weight, masks)
    if grad is None:
        return cost, None, None
    return (cost, *layer_views(grad, net.sizes))
