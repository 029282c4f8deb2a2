"""A look inside backpropagation: the quantities of the derivation, as NumPy arrays.

:func:`trace` runs the network's own forward and backward pass (the backend's kernels,
not a re-implementation) on one batch and hands back every quantity of ``docs/design.md``
section 1, named as there::

    a[0] = X,   z^l = a^{l-1} W^l + b^l,   a^l = g(z^l)                      (l = 1..L)
    delta^L = ∂C/∂z^L = (1/P) ∂c/∂a^L ⊙ g_o'(z^L)
    delta^l = (delta^{l+1} W^{l+1 T}) ⊙ g'(z^l)
    dW^l = ∂C/∂W^l = a^{l-1 T} delta^l,   db^l = ∂C/∂b^l = Σ_p delta^l_p

``C`` is the *mean* cost over the P examples, so every ``delta`` carries the 1/P.
Lists of per-layer quantities are 0-based: layer ``l`` is at index ``l - 1``.

:func:`gradient_flow` condenses the same quantities over a whole data set into one
figure per layer (``‖∂C/∂W^l‖`` and the mean ``|δ^l|``), which :meth:`Network.fit`
records each epoch with ``gradient_flow=True`` and :meth:`History.plot` draws.
"""

from dataclasses import dataclass

import numpy as np

from gpubp.core.backprop import backward
from gpubp.core.diagnostics import data_sums, flow_figures
from gpubp.core.dropout import trace_drops
from gpubp.core.reduction import Identity


@dataclass(frozen=True)
class Trace:
    """Forward and backward quantities of one batch (host NumPy arrays).

    Attributes
    ----------
    a : list of ndarray
        ``a[l]`` is ``a^l``, shape ``(P, n_l)``, for ``l = 0..L``; ``a[0]`` is ``X``.
    z : list of ndarray
        ``z[l - 1]`` is ``z^l = a^{l-1} W^l + b^l``, shape ``(P, n_l)``.
    delta : list of ndarray
        ``delta[l - 1]`` is ``δ^l = ∂C/∂z^l``, shape ``(P, n_l)`` (includes 1/P).
    dW : list of ndarray
        ``dW[l - 1]`` is ``∂C/∂W^l``, shape ``(n_{l-1}, n_l)``.
    db : list of ndarray
        ``db[l - 1]`` is ``∂C/∂b^l``, shape ``(n_l,)``.
    cost : float
        ``C``, the mean cost over the batch.
    masks : list or None
        With dropout, ``masks[l - 1]`` is the boolean keep-mask ``m^l`` (P, n_l) of hidden
        layer ``l`` (None for a layer without dropout); ``a`` then holds the activations
        as backpropagation used them, ``g(z^l) ⊙ m^l / (1 − p_l)``. None without dropout.
    """

    a: list
    z: list
    delta: list
    dW: list
    db: list
    cost: float
    masks: list = None

    @property
    def L(self):
        """Number of weight layers."""
        return len(self.z)

    def __repr__(self):
        widths = [a.shape[1] for a in self.a]
        return (f"Trace(P={self.a[0].shape[0]}, sizes={widths}, cost={self.cost:.6g}, "
                f"‖dW^l‖={[round(float(np.linalg.norm(g)), 6) for g in self.dW]})")


def trace(net, X, Y, dropout_mask=None):
    """The forward and backward quantities of ``net`` on the batch ``(X, Y)``.

    Parameters
    ----------
    net : Network
    X : array-like, shape (P, n_0)
    Y : array-like, shape (P, n_L), or (P,) labels for classifiers
    dropout_mask : list or None
        Fixed dropout masks, as :meth:`gpubp.Network.gradients` takes them. None, for a
        network with dropout: the masks of a training step, drawn from ``net.rng`` as an
        epoch's first step draws them (the generator advances as in that epoch).

    Returns
    -------
    Trace

    Notes
    -----
    The whole batch goes through the backend at once (the workspaces grow to P rows),
    so ``delta`` carries exactly 1/P. ``z`` is not kept by the backends (they apply the
    activation in place, docs/design.md §1), so it is recomputed here in NumPy from ``a^{l-1}``
    and the parameters.
    """
    X, Y = net._check_XY(X, Y)
    be, L = net.backend, net.L
    P = net._load(X, Y)
    drops, masks = trace_drops(net, dropout_mask, P)
    net._forward(P, drops)
    cost = float(be.to_host(backward(net, P, Identity(net), drops)))
    W, b = net.get_params()
    a = [be.to_host(net.activations[l][:P]).copy() for l in range(L + 1)]
    z = [a[l] @ W[l] + b[l] for l in range(L)]
    delta = [be.to_host(net.deltas[l][:P]).copy() for l in range(1, L + 1)]
    dW = [be.to_host(g).copy() for g in net.nabla_w]
    db = [be.to_host(g).copy() for g in net.nabla_b]
    return Trace(a=a, z=z, delta=delta, dW=dW, db=db, cost=cost, masks=masks)


def gradient_flow(net, X, Y):
    """Per-layer gradient figures over all of ``(X, Y)`` (already checked host arrays).

    Returns
    -------
    dict
        ``"grad_norm_W{l}"``: ``‖∂C/∂W^l‖`` (Frobenius) of the mean cost over all rows;
        ``"mean_abs_delta{l}"``: the mean over examples and units of ``|δ^l|``, δ^l being
        ``∂C/∂z^l`` of that mean cost, for ``l = 1..L``.
    """
    sums = data_sums(net, X, Y, None, gradients=True, abs_deltas=True)
    N = net.theta.size
    return flow_figures(net, sums[3:3 + N] / sums[2], sums[3 + N:], sums[2])
