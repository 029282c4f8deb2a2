"""Central-difference gradient checking, in float64, with PyTorch's atol/rtol criterion.

``∂C/∂θ_k ≈ (C(θ + ε e_k) − C(θ − ε e_k)) / 2ε`` has error ``O(ε²)`` from truncation and
``O(u·c / ε)`` from rounding, where ``u ≈ 1.1e-16`` and ``c`` is the size of the terms the
cost is computed from (``|C|``, or ``|z|`` for a log-softmax whose cost cancels to nearly 0);
``ε = 1e-6`` balances the two. The rounding part is *absolute*: it does not shrink with the
gradient. A purely relative error therefore fails on noise when the gradient vanishes (a
saturated softmax whose cost is 1e-11), which is why the criterion has an absolute floor
``atol`` next to the relative ``rtol``, as ``torch.autograd.gradcheck`` has.

``relu`` (and leaky_relu, selu: the table's ``kink``) has a kink at 0, where it has no
derivative: a central difference whose two
steps put some pre-activation on different sides of it (or on it) measures neither side's
slope. Such an entry is common, not a rare accident: an example whose relu units of one
layer are all off feeds the next layer ``z = b`` exactly, ``0`` with the default zero
biases. Those entries are found by recomputing the pre-activations at both steps, reported
apart (``kinks``) and left out of the error; every other entry is checked as strictly.
"""

import functools

import numpy as np

from gpubp.activations import ACTIVATIONS
from gpubp import losses
from gpubp.data.validation import check_positive
from gpubp.core.network import Network
from gpubp.kernels.reference import activate


def gradcheck(net, X, Y, eps=1e-6, atol=1e-8, rtol=1e-6, return_kinks=False,
              dropout_mask=None):
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
    return_kinks : bool
        Also return, per layer, how many entries were left out because their central
        difference straddles relu's kink (see the module docstring).
    dropout_mask : list or None
        A fixed dropout mask (as :meth:`gpubp.Network.gradients` takes it): backpropagation
        and every difference then see the same thinned network.

    Returns
    -------
    errors : ndarray, shape (L,)
        For layer ``l``: ``max |g − ĝ| / (atol + rtol · s_l)`` over its entries, those at a
        non-differentiable point of relu left out. The check passes when every value is
        ``<= 1``.
    kinks : ndarray of int64, shape (L,)
        Only with ``return_kinks``: the entries left out, per layer.

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

    probe = Network(net.sizes, hidden=net.hidden, output=net.output, loss=net.loss_name,
                    device=net.device, dtype="float64", backend=net.backend.name,
                    dropout=net.dropout, negative_slope=net.negative_slope,
                    **losses.keywords(net.loss_name, net.loss_param))
    W, b = net.get_params()
    W = [w.astype(np.float64) for w in W]
    b = [v.astype(np.float64) for v in b]
    probe.set_params(W, b)
    dW, db = probe.gradients(X, Y, dropout_mask=dropout_mask)
    # the layers whose g' jumps at 0 (relu, leaky_relu, selu: the table's kink)
    relu_layers = [l for l, g in enumerate(net.activation_names) if ACTIVATIONS[g].kink]
    X64 = np.asarray(X, dtype=np.float64)
    cost = functools.partial(probe.loss, X, Y, dropout_mask=dropout_mask)
    thinning = None if dropout_mask is None else [
        None if m is None else (np.asarray(m) != 0) / (1 - p)
        for m, p in zip(dropout_mask, net.dropout)]
    relu_inputs = functools.partial(_relu_inputs, X=X64, activations=net.activation_names,
                                    relu_layers=relu_layers, thinning=thinning,
                                    slope=probe.negative_slope or 0.0)

    errors = np.zeros(net.L)
    kinks = np.zeros(net.L, dtype=np.int64)
    for l in range(net.L):
        analytic, numeric, smooth = [], [], []
        for params, grads in ((W, dW), (b, db)):
            theta = params[l]
            fd = np.zeros_like(theta)
            ok = np.ones(theta.size, dtype=bool)
            flat, fd_flat = theta.reshape(-1), fd.reshape(-1)
            for k in range(flat.size):
                saved = flat[k]
                flat[k] = saved + eps
                probe.set_params(W, b)
                c_plus = cost()
                z_plus = relu_inputs(W, b)
                flat[k] = saved - eps
                probe.set_params(W, b)
                c_minus = cost()
                z_minus = relu_inputs(W, b)
                flat[k] = saved
                fd_flat[k] = (c_plus - c_minus) / (2 * eps)
                ok[k] = not any(_straddles(zp, zm) for zp, zm in zip(z_plus, z_minus))
            probe.set_params(W, b)
            analytic.append(grads[l].ravel())
            numeric.append(fd_flat)
            smooth.append(ok)
        g, g_hat, ok = np.concatenate(analytic), np.concatenate(numeric), np.concatenate(smooth)
        kinks[l] = np.count_nonzero(~ok)
        scale = max(np.abs(g).max(), np.abs(g_hat).max())
        worst = np.abs(g - g_hat)[ok].max(initial=0.0)
        errors[l] = 0.0 if worst == 0 else worst / (atol + rtol * scale)
    return (errors, kinks) if return_kinks else errors


def _relu_inputs(W, b, X, activations, relu_layers, thinning=None, slope=0.0):
    """The pre-activations ``z^l`` of the kinked layers (float64, NumPy), in order;
    ``thinning``: per hidden layer, the dropout factors ``m / (1 − p)`` (or None)."""

    out, a = [], X
    for l, g in enumerate(activations[:relu_layers[-1] + 1] if relu_layers else ()):
        z = a @ W[l] + b[l]
        if l in relu_layers:
            out.append(z.copy())
        a = activate(z, g, slope)
        if thinning is not None and l < len(thinning) and thinning[l] is not None:
            a = a * thinning[l]
    return out


def _straddles(z_plus, z_minus):
    """Whether a pre-activation that the step moves crosses relu's kink or touches it.

    One that sits on the kink and does not move (``z = b = 0`` while a weight of another
    layer is perturbed) leaves the difference exact: it is not counted.
    """
    moved = z_plus != z_minus
    return bool(np.any(moved & ((z_plus == 0) | (z_minus == 0) | ((z_plus > 0) != (z_minus > 0)))))
