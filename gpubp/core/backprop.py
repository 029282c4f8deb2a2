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

from gpubp.core.layout import layer_views, row_blocks
from gpubp.core.reduction import Identity
from gpubp.data.inputs import is_sparse


def workspace(net, P):
    """Make sure the workspaces hold ``P`` rows; grow (never shrink) them if needed.

    The activations ``a^0..a^L`` are consecutive blocks of one flat buffer, and so
    are the errors ``δ^1..δ^L``, each block ``(P, n_l)`` row-major: the leading-row
    views a smaller batch uses are contiguous, and the compiled CPU epoch
    (:mod:`gpubp.core.compiled`) reaches every layer through one buffer and its offsets.
    """
    if P <= net._capacity:
        return
    be, dt = net.backend, net.dtype
    net._activations_flat = be.empty((P * sum(net.sizes),), dt)
    net._deltas_flat = be.empty((P * sum(net.sizes[1:]),), dt)
    net.activations = row_blocks(net._activations_flat, P, net.sizes)
    net.deltas = [None] + row_blocks(net._deltas_flat, P, net.sizes[1:])
    net.targets = be.empty((P, net.sizes[-1]), dt)
    net._row_weights = be.empty((P,), dt)  # w_p of weighted rows (see load)
    net._host_x = np.empty((P, net.sizes[0]), dt)  # staging rows for shuffled batches
    net._host_y = np.empty((P, net.sizes[-1]), dt)
    net._capacity = P


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
    host_index = index
    if index is not None and not isinstance(index, np.ndarray):
        host_index = net.backend.to_host(index)  # a device-resident order (fit on a GPU)
    if is_sparse(X):
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
    if net._weighted:
        s = np.asarray(weights[host_index] if index is not None else weights, np.float64)
        total = s.sum()
        # w_p = s_p P / Σs, so that the mean over the rows of w_p c_p is Σ s_p c_p / Σ s_p
        w = s * (P / total) if total > 0 else np.zeros_like(s)
        net.backend.to_device(w.astype(net.dtype), out=net._row_weights[:P])
    return P


def forward(net, P):
    """Feed-forward over the first ``P`` rows of ``a^0``; returns the view ``a^L``."""
    be, a = net.backend, net.activations
    for l in range(1, net.L + 1):
        if l == 1 and net._sparse_a0 is not None:  # sparse a^0: a sparse x dense product
            be.sparse_matmul(net._sparse_a0, net.W[0], out=a[1][:P])
        else:
            be.matmul(a[l - 1][:P], net.W[l - 1], out=a[l][:P])  # z^l = a^{l-1} W^l
        be.bias_activation(a[l][:P], net.b[l - 1], net.activation_names[l - 1])
    return a[net.L][:P]


def backward(net, P, reduction):
    """Backpropagate from the loaded targets; fills ``nabla_w``/``nabla_b``, returns ``C``.

    ``reduction`` (:mod:`gpubp.core.reduction`) rescales ``δ^L`` by its ``delta_scale``
    (1.0 for one process: no product; ``1/P`` to ``1/P_global`` on the ranks of a
    data-parallel run) and is told as each layer's gradient is final, so that it can
    start summing it.

    With weighted rows the cost is ``C = Σ_p s_p c_p / Σ_p s_p``: the output kernel
    scales each row of the seed ``δ^L`` by ``w_p = s_p P / Σ s`` (it carries ``1/P``
    already) and each row's cost with it, and everything below it follows unchanged.
    """
    be, a, delta, L = net.backend, net.activations, net.deltas, net.L
    w = net._row_weights[:P] if net._weighted else None
    cost = be.output_delta(a[L][:P], net.targets[:P], net.output, net.loss_name, delta[L][:P],
                           net.loss_param, w)
    if reduction.delta_scale != 1.0:
        delta[L][:P] *= reduction.delta_scale
    for l in range(L, 0, -1):
        if l == 1 and net._sparse_a0 is not None:
            be.sparse_weight_bias_gradients(net._sparse_a0, delta[1][:P],
                                            net.nabla_w[0], net.nabla_b[0])
        else:
            be.weight_bias_gradients(a[l - 1][:P], delta[l][:P],
                                     net.nabla_w[l - 1], net.nabla_b[l - 1])
        reduction.layer_done(l - 1)
        if l > 1:
            be.matmul(delta[l][:P], net.W[l - 1].T, out=delta[l - 1][:P])
            be.hidden_delta(delta[l - 1][:P], a[l - 1][:P], net.activation_names[l - 2])
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
    reduction.begin(P, P if P_global is None else P_global)
    if P:
        load(net, X, Y, index, weights=weights)
        forward(net, P)
        cost = backward(net, P, reduction)
    else:  # no row of this batch here: add zeros to the sum
        cost = 0.0
        for l in range(net.L - 1, -1, -1):
            net.nabla_theta[net.layer_slices[l]] = 0
            reduction.layer_done(l)
    reduction.wait()
    reduction.update(optimizer)
    return cost, P


def cost_and_flat_gradient(net, X, Y, want_gradient, sample_weight=None):
    """Full-batch cost and its gradient laid out as ``theta`` (a host array), computed
    chunk by chunk on the backend: each chunk's gradient is that of its own (weighted)
    mean, so it is reweighted by its share of the rows (or of the total weight)."""
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
        forward(net, P)
        total += float(backward(net, P, alone)) * share
        if want_gradient:
            grad += net.backend.to_host(net.nabla_theta) * share
    return total, grad


def cost_and_gradients(net, X, Y, want_gradients, sample_weight=None):
    """Mean (or ``sample_weight``-weighted mean) cost over all rows and, optionally,
    its exact gradient as host arrays ``dW``, ``db``."""
    cost, grad = cost_and_flat_gradient(net, X, Y, want_gradients, sample_weight)
    if grad is None:
        return cost, None, None
    return (cost, *layer_views(grad, net.sizes))
