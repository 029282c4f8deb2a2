"""The loss loops of the fused CPU kernels (:mod:`gpubp.kernels.cpu`): what each output
entry contributes to ``δ^L`` and the cost, by the loss codes of :mod:`gpubp.losses`.

Compiled into :func:`gpubp.kernels.cpu._output_delta` and the compiled epoch, never
cached on their own (see "JIT cache" in :mod:`gpubp.kernels.cpu`).
"""

from numba import njit

from gpubp import losses
from gpubp.kernels.cpu_math import _log_f64

MSE, BINARY_CROSS_ENTROPY, CROSS_ENTROPY, POISSON, HUBER, L1 = map(
    losses.code, ("mse", "binary_cross_entropy", "cross_entropy", "poisson", "huber", "l1"))


@njit(inline="always", error_model="numpy")
def _slope_and_cost(d, loss, loss_param):
    """``(∂c/∂a, c)`` of one output of the regression losses, ``d = a − y``."""
    if loss == HUBER:
        r = abs(d)
        if r <= loss_param:
            return d, 0.5 * d * d
        return (loss_param if d > 0 else -loss_param) + d * 0, loss_param * (r - 0.5 * loss_param)
    if loss == L1:
        return (d > 0) - (d < 0) + d * 0, abs(d)  # sign(0) = 0, PyTorch's subgradient
    return d, 0.5 * d * d


@njit(error_model="numpy")
def _poisson_delta(a, y, delta, tiny, w):
    """``δ^L = (a − y) / P`` and the mean of ``Σ_j [y log(y / a) − y + a]`` (0 log 0 = 0);
    rows weighted by ``w`` unless it is empty (see ``_output_delta``)."""
    P, n = a.shape
    inv_p = 1.0 / max(P, 1)
    cost = 0.0
    for p in range(P):
        row_scale = w[p] * inv_p if w.size > 0 else inv_p
        row_cost = 0.0
        for j in range(n):
            aj = a[p, j]
            yj = y[p, j]
            delta[p, j] = (aj - yj) * row_scale
            if yj > 0:
                # the vectorisable log (cpu_math), in float64 as the cost is
                row_cost += yj * (_log_f64(float(yj)) - _log_f64(float(max(aj, tiny))))
            row_cost += aj - yj
        cost += w[p] * row_cost if w.size > 0 else row_cost
    return cost / P
