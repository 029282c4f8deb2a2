"""Figures over a whole data set: summed costs, correct counts, gradients and |δ| per layer.

The fit loop (each epoch's validation, ``tol``'s gradient norm, the gradient-flow figures)
and :func:`gpubp.core.trace.gradient_flow` share these passes. A data-parallel run passes
its process group (:class:`gpubp.distributed.Group`), whose ``rows(n)`` is this rank's
share and whose ``sum`` adds the ranks' partial sums; one process uses :data:`ALONE`.
"""

import numpy as np

from gpubp.core.layout import layer_views
from gpubp.data import mapped


class Alone:
    """The process group of a single process: every row is its own, a sum is itself."""

    def rows(self, n):
        return slice(0, n)

    def sum(self, values):
        return np.asarray(values, dtype=np.float64)


ALONE = Alone()


def flow_figures(net, grad, abs_delta_sums, P):
    """The gradient-flow figures (see :func:`gpubp.core.trace.gradient_flow`) from the mean
    gradient ``grad`` (laid out as ``theta``) and ``Σ_p Σ_j |P δ^l_pj|`` per layer over
    ``P`` rows (each row's own error, as a batch of ``P`` rows scales it by ``1/P``)."""
    W, _ = layer_views(grad, net.sizes)
    figures = {f"grad_norm_W{l + 1}": float(np.linalg.norm(w)) for l, w in enumerate(W)}
    for l in range(net.L):  # the mean |δ^l| of the mean cost over P rows: 1/P per row
        figures[f"mean_abs_delta{l + 1}"] = float(abs_delta_sums[l] / (P * P * net.sizes[l + 1]))
    return figures


def data_sums(net, X, Y, rows, group=ALONE, gradients=False, abs_deltas=False):
    """``[Σ cost, Σ correct, P, (Σ_p ∇c_p)..., (Σ_p |δ^l_p|)...]`` over ``rows`` of (X, Y),
    summed over ranks.

    Each rank passes over its share of the rows in chunks (a memory-mapped X is gathered
    chunk by chunk, never read whole); ``rows`` None means all of them. The gradient sum
    is the flat concatenation of ``∂W^1, ∂b^1, ...`` times the row count; with
    ``abs_deltas`` (and ``gradients``) one sum per layer of every row's ``|δ^l|`` follows
    (each row's own error, unscaled by the chunk's row count).
    """
    n = X.shape[0] if rows is None else len(rows)
    share = group.rows(n)
    be, L = net.backend, net.L
    total = correct = 0.0
    grad = np.zeros(net.theta.size) if gradients else np.zeros(0)
    abs_delta = np.zeros(L if abs_deltas else 0)
    pages = mapped.PageBudget([X, Y])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for chunk in net._chunks(share.stop - share.start):
            positions = slice(share.start + chunk.start, share.start + chunk.stop)
            index = positions if rows is None else rows[positions]
            if rows is None:
                Xc, Yc = X[index], Y[index]
            else:
                Xc, Yc = mapped.take(X, index), mapped.take(Y, index)
            P = net._load(Xc, Yc)
            a = net._forward(P)
            if gradients:
                cost = net._backward(P)
                grad += P * be.to_host(net.nabla_theta)
                for l in range(len(abs_delta)):
                    abs_delta[l] += P * float(np.abs(be.to_host(net.deltas[l + 1][:P])).sum())
            else:
                cost = be.output_delta(a, net.targets[:P], net.output, net.loss_name,
                                       net.deltas[L][:P], net.loss_param)
            total += float(cost) * P
            if net.is_classifier:
                correct += float(net._count_correct(P))
            pages.touched(P)
    pages.release()
    return group.sum(np.concatenate([[total, correct, share.stop - share.start], grad,
                                     abs_delta]))
