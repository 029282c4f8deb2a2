"""Central-difference gradient checking, in float64.

``∂C/∂θ_k ≈ (C(θ + ε e_k) − C(θ − ε e_k)) / 2ε`` has error ``O(ε²)`` from truncation and
``O(u / ε)`` from rounding (``u ≈ 1.1e-16``); ``ε = 1e-6`` balances the two, so a correct
backpropagation agrees with it to about 1e-8 or better, and a wrong one by O(1).
"""

import numpy as np


def gradcheck(net, X, Y, eps=1e-6):
    """Worst relative error per layer between backpropagation and central differences.

    The check runs on a float64 copy of ``net`` on the same backend (the parameters are
    cast; ``net`` itself is left untouched), so it tests that backend's kernels.

    Parameters
    ----------
    net : gpubp.Network
    X : array-like, shape (P, n_0)
    Y : array-like, targets as accepted by ``net.loss``
    eps : float
        Step of the central differences.

    Returns
    -------
    ndarray, shape (L,)
        For layer ``l``: ``max |g − ĝ| / max(max |g|, max |ĝ|)`` over the entries of
        ``W^l`` and ``b^l`` together, where ``g`` is backpropagation's gradient and ``ĝ``
        the central difference (0 when both are exactly zero).
    """
    from gpubp.network import Network

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
        errors[l] = 0.0 if scale == 0 else np.abs(g - g_hat).max() / scale
    return errors
