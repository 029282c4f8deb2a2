"""One step of differentially private SGD (Abadi et al. 2016, as Opacus defines it).

Each example's gradient ``g_p = ∂c_p/∂θ`` (its own cost) is clipped to norm ``C``,
the clipped gradients are summed, Gaussian noise of standard deviation ``σ C`` is added,
and the sum is divided by the expected batch size ``B``:

    ∇̃ = (Σ_p min(1, C / (‖g_p‖ + 10⁻⁶)) g_p + N(0, σ² C² I)) / B

Every ``g_p`` is rank one per layer, ``outer([a_p^{l-1}, 1], P δ_p^l)``, so the clipping
is one scaling of row p of every ``δ^l`` by ``P min(1, C/‖g_p‖)`` before the
weight-gradient products (:func:`gpubp.core.backprop.backward`'s GEMMs), done by the
backend's ``clip_example_rows`` (array-module code; on CUDA the kernels of
:mod:`gpubp.kernels.cuda_private`): no per-example gradient is made. :func:`clip_factors`
gives the same factors from :func:`gpubp.core.per_example.layer_norms`.
The noise is drawn by the caller (:mod:`gpubp.training.privacy`), so that a test can give
the same draws to an independent computation.
"""

from gpubp.core import backprop, dropout, per_example
from gpubp.kernels.reference_private import CLIP_EPS  # Opacus's 1e-6, one definition


def clip_factors(net, P, max_grad_norm):
    """``min(1, C / (‖g_p‖ + 10⁻⁶))`` (P,) of the loaded batch, after ``own_deltas``."""
    xp = net.backend.xp
    norms = per_example.layer_norms(net, P)
    total = xp.sqrt(xp.einsum("lp,lp->p", norms, norms))
    return xp.minimum(1.0, max_grad_norm / (total + CLIP_EPS)).astype(net.dtype)


def clipped_sum(net, P, max_grad_norm, first_row=None):
    """``nabla_theta = Σ_p clip(g_p)`` of the loaded batch; returns its mean cost.

    Parameters
    ----------
    net : Network
        With ``P`` rows loaded (:func:`gpubp.core.backprop.load`).
    P : int
    max_grad_norm : float
        ``C``.
    first_row : int or None
        The global row of the first loaded row in its batch (a rank's share), whose
        dropout masks follow; None: 0.
    """
    be, a, delta = net.backend, net.activations, net.deltas
    drops = dropout.step_drops(net, first_row=first_row)  # the step's masks, or None
    backprop.forward(net, P, drops)
    cost = per_example.own_deltas(net, P, drops)
    # δ^l carries 1/P: P δ_p^l is example p's own error (the scale includes the P)
    inputs = [net._sparse_a0 if l == 1 and net._sparse_a0 is not None else a[l - 1][:P]
              for l in range(1, net.L + 1)]
    be.clip_example_rows(inputs, [delta[l][:P] for l in range(1, net.L + 1)], max_grad_norm)
    for l in range(net.L, 0, -1):
        if l == 1 and net._sparse_a0 is not None:
            be.sparse_weight_bias_gradients(net._sparse_a0, delta[1][:P],
                                            net.nabla_w[0], net.nabla_b[0])
        else:
            be.weight_bias_gradients(a[l - 1][:P], delta[l][:P],
                                     net.nabla_w[l - 1], net.nabla_b[l - 1])
    return cost


def private_step(net, optimizer, X, Y, index, max_grad_norm, noise, expected_batch):
    """One DP-SGD step on the rows ``index`` of ``X`` (may be empty); returns ``(cost, P)``.

    ``noise`` (N,) host array: the draws of ``N(0, σ² C²)`` added to the clipped sum, laid
    out as ``theta`` (None: no noise). The update is ``optimizer``'s on
    ``(Σ_p clip(g_p) + noise) / expected_batch`` (Opacus's ``expected_batch_size``),
    made in place in ``nabla_theta``: two passes over it, no temporary on the host.
    """
    cost, P = private_gradient(net, X, Y, index, max_grad_norm, noise, expected_batch)
    backprop.update(net, optimizer)
    return cost, P


def private_gradient(net, X, Y, index, max_grad_norm, noise, expected_batch, first_row=None):
    """:func:`private_step` without its update: ``nabla_theta = (Σ_p clip(g_p) + noise)
    / expected_batch`` of the rows ``index``; returns ``(cost, P)``.

    On the ranks of a data-parallel run ``index`` is this rank's share of the batch and
    one rank passes the noise (the others None): the sum of the ranks' ``nabla_theta``
    (:func:`reduced_update`) is one process's, up to the order of the additions, as the
    norms are per example. ``first_row`` is then the share's first row in the batch
    (dropout masks each row by its global place); a rank with an empty share of a batch
    that has rows still counts the batch, so every rank's masks stay in step.
    """
    P = len(index)
    cost = 0.0
    be = net.backend
    if P:
        backprop.load(net, X, Y, index)
        cost = clipped_sum(net, P, max_grad_norm, first_row)
    else:  # an empty Poisson batch (or share): the noise alone
        if first_row is not None:  # this rank's share of a batch with rows: count it
            dropout.next_step(net, 0, first_row)
        net.nabla_theta[...] = 0
    if noise is not None:
        net.nabla_theta += noise if be.shares_host_memory else be.to_device(noise)
    net.nabla_theta *= 1.0 / expected_batch
    return cost, P


def reduced_update(net, optimizer, reduction):
    """Sum every rank's :func:`private_gradient` through ``reduction``
    (:mod:`gpubp.core.reduction`), then its update."""
    for l in range(net.L - 1, -1, -1):  # every layer is final: the sums may start
        reduction.layer_done(l)
    reduction.wait()
    reduction.update(optimizer)
