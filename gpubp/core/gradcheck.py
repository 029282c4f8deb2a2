"""Central-difference gradient checking, in float64, with PyTorch's atol/rtol criterion.

``∂C/∂θ_k ≈ (C(θ + ε e_k) − C(θ − ε e_k)) / 2ε`` has error ``O(ε²)`` from truncation and
``O(u·c / ε)`` from rounding, where ``u ≈ 1.1e-16`` and ``c`` is the size of the terms the
cost is computed from (``|C|``, or ``|z|`` for a log-softmax whose cost cancels to nearly 0);
``ε = 1e-6`` balances the two. The rounding part is *absolute*: it does not shrink with the
gradient. A purely relative error therefore fails on noise when the gradient vanishes (a
saturated softmax whose cost is 1e-11), which is why the criterion has an absolute floor
``atol`` next to the relative ``rtol``, as ``torch.autograd.gradcheck`` has.
"""

import numpy as np

from gpubp.data.validation import check_positive


def gradcheck(net, X, Y, eps=1e-6, atol=1e-8, rtol=1e-6):
    """Backpropagation against central differences, per layer, in units of the tolerance.

    The entries ``g`` of backpropagation's gradient of layer ``l`` (``W^l`` and ``b^l``
    together) pass when, for every entry,

        ``|g − ĝ| <= atol + rtol · s_l``,   ``s_l = max(max |g|, max |ĝ|)``,

    ``ĝ`` being the central difference. This is PyTorch's ``gradcheck`` criterion
    (``|g − ĝ| <= atol + rtol·|ĝ|``) with the layer's gradient scale ``s_l`` in place of each
    entry's own size, so that the near-zero entries of a large gradient are held to the
    layer's relative accuracy. A correct backpropagation gives errors of about 1e-3 or less
    with the defaults; a wrong one gives errors of order ``1 / rtol``.

    The check runs on a float64 copy of ``net`` on the same backend (the parameters are
    cast; ``net`` itself is left untouched), so it tests that backend's kernels.

    Parameters
    ----------
    net : gpubp.Network
    X : array-like, shape (P, n_0)
    Y : array-like, targets as accepted by ``net.loss``
    eps : float
        Step of the central differences.
    atol : float
        Absolute tolerance: the floor for vanishing gradients, above the rounding error of
        the central differences (about ``1e-10·c``, see the module docstring).
    rtol : float
        Relative tolerance, with respect to the layer's gradient scale ``s_l``.

    Returns
    -------
    ndarray, shape (L,)
        For layer ``l``: ``max |g − ĝ| / (atol + rtol · s_l)`` over its entries. The check
        passes when every value is ``<= 1``.

    Raises
    ------
    ValueError
        When ``eps`` is not > 0, ``atol`` or ``rtol`` is negative, or both are 0.
    """
    check_positive(eps, "eps")
    check_positive(atol, "atol", allow_zero=True)
    check_positive(rtol, "rtol", allow_zero=True)
    if atol == 0 and rtol == 0:
        raise ValueError("atol and rtol must not both be 0 (no difference would pass), got "
                         "atol=0, rtol=0")
    from gpubp.core.network import Network

    probe = Network(net.sizes, hidden=net.hidden, output=net.output, loss=net.loss_name,
                    device=net.device, dtype="float64", backend=net.backend.name)
    W, b = net.get_params()
    W = [w.astype(np.float64) for w in W]
    b = [v.astype(np.float64) for v in b]
    probe.set_params(W, b)
    dW, db = probe.gradients(X, Y)

    errors = np.zeros(net.L)
    for l in range(net.L):
        analytic, numeric = [], []
        for params, grads in ((W, dW), (b, db)):
            theta = params[l]
            fd = np.zeros_like(theta)
            flat, fd_flat = theta.reshape(-1), fd.reshape(-1)
            for k in range(flat.size):
                saved = flat[k]
                flat[k] = saved + eps
                probe.set_params(W, b)
                c_plus = probe.loss(X, Y)
                flat[k] = saved - eps
                probe.set_params(W, b)
                c_minus = probe.loss(X, Y)
                flat[k] = saved
                fd_flat[k] = (c_plus - c_minus) / (2 * eps)
            probe.set_params(W, b)
            analytic.append(grads[l].ravel())
            numeric.append(fd_flat)
        g, g_hat = np.concatenate(analytic), np.concatenate(numeric)
        scale = max(np.abs(g).max(), np.abs(g_hat).max())
        worst = np.abs(g - g_hat).max()
        errors[l] = 0.0 if worst == 0 else worst / (atol + rtol * scale)
    return errors
