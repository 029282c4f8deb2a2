"""Full-batch L-BFGS over a network's flat parameter vector ``theta``.

SciPy's L-BFGS-B (``scipy.optimize.minimize(method="L-BFGS-B", jac=True)``) drives the
search on the host; each evaluation writes the candidate into ``net.theta`` and has the
backend compute the full-batch cost and its gradient, chunk by chunk (on the GPU when the
network lives there); only the vector and its gradient cross to the host.

The objective is the network's mean cost (weighted by ``sample_weight`` when given) plus
the L2 penalty ``α/2 ‖W‖² / n`` on the weights (not the biases), ``n`` the number of
examples or the total weight: scikit-learn's ``MLPClassifier(solver="lbfgs")`` objective.
"""

import numbers

import numpy as np
import scipy.optimize

from gpubp.data.inputs import check_sample_weight
from gpubp.data.validation import check_positive


def weight_mask(net):
    """Boolean mask of ``theta``'s entries that are weights (True) rather than biases."""
    mask = np.zeros(net.theta.shape, dtype=bool)
    for block, n_in, n_out in zip(net.layer_slices, net.sizes[:-1], net.sizes[1:]):
        mask[block.start:block.start + n_in * n_out] = True
    return mask


def objective(net, X, Y, sample_weight=None, alpha=0.0):
    """The function ``f(theta) -> (cost, gradient)`` (float64 host values) that
    :func:`minimize` hands to SciPy, for validated ``X``, ``Y``.

    Evaluating it leaves ``theta`` in ``net.theta``.
    """
    mask = weight_mask(net) if alpha else None
    n = X.shape[0] if sample_weight is None else float(sample_weight.sum())

    def f(theta):
        net.backend.to_device(theta.astype(net.dtype, copy=False), out=net.theta)
        cost, grad = net._cost_and_flat_gradient(X, Y, True, sample_weight)
        grad = grad.astype(np.float64)
        if alpha:
            W = theta[mask]
            cost += 0.5 * alpha * float(W @ W) / n
            grad[mask] += (alpha / n) * W
        return cost, grad

    return f


def minimize(net, X, Y, sample_weight=None, alpha=0.0, max_iter=200, max_fun=15000,
             tol=1e-4, callback=None):
    """Train ``net`` in place by L-BFGS-B from its current parameters.

    Parameters
    ----------
    net : Network
    X : array-like or SciPy sparse matrix, shape (P, n_0)
    Y : array-like, shape (P, n_L), or (P,) labels for classifiers
    sample_weight : array-like, shape (P,), or None
    alpha : float
        L2 penalty on the weights (see the module docstring).
    max_iter, max_fun : int
        SciPy's ``maxiter`` (iterations) and ``maxfun`` (cost evaluations).
    tol : float
        SciPy's ``gtol``: stop when every entry of the projected gradient is at most ``tol``.
    callback : callable or None
        Called after each iteration with SciPy's intermediate ``OptimizeResult``.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x`` (also left in ``net.theta``), ``fun``, ``nit``, ``nfev``, ``status``
        (0 converged, 1 a limit reached), ``message``.
    """
    X, Y = net._check_XY(X, Y)
    sample_weight = check_sample_weight(sample_weight, X.shape[0])
    check_positive(alpha, "alpha", allow_zero=True)
    check_positive(max_iter, "max_iter", numbers.Integral)
    check_positive(max_fun, "max_fun", numbers.Integral)
    check_positive(tol, "tol", allow_zero=True)
    f = objective(net, X, Y, sample_weight, float(alpha))
    x0 = net.backend.to_host(net.theta).astype(np.float64)
    kwargs = {} if callback is None else {"callback": callback}
    result = scipy.optimize.minimize(
        f, x0, method="L-BFGS-B", jac=True,
        options={"maxiter": int(max_iter), "maxfun": int(max_fun), "gtol": float(tol)},
        **kwargs)
    net.backend.to_device(result.x.astype(net.dtype), out=net.theta)
    return result
