"""NumPy twins of the DP-SGD clipping kernels (:mod:`gpubp.kernels.cuda_private`).

Example p's gradient is rank one per layer, ``outer([a_p^{l-1}, 1], P δ_p^l)``, so its
squared norm is ``P² Σ_l (‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²`` (the δ of a batch carry ``1/P``),
and clipping it to ``C`` (Opacus's ``min(1, C / (‖g_p‖ + 10⁻⁶))``) scales row p of every
``δ^l``. The twins compute it as the kernels do, in the δ's dtype: the sum over the
layers first (:func:`example_norms_sq`), then one scaling per layer (:func:`clip_rows`),
which also multiplies by P (so that the weight-gradient products give the clipped *sum*).
The arithmetic uses array methods only, so CuPy arrays run them as well.
"""

CLIP_EPS = 1e-6  # Opacus's min(1, C / (‖g_p‖ + 1e-6))


def example_norms_sq(a_prev, delta, total, accumulate=False):
    """``total_p (+)= (‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²`` of one layer, in place.

    Parameters
    ----------
    a_prev : array, shape (P, n_{l-1})
    delta : array, shape (P, n_l)
    total : array, shape (P,)
        Set (``accumulate`` False: the first layer summed) or added to.
    """
    one = total.dtype.type(1)
    term = ((a_prev * a_prev).sum(axis=1) + one) * (delta * delta).sum(axis=1)
    if accumulate:
        total += term
    else:
        total[...] = term


def clip_rows(delta, total, max_grad_norm):
    """``δ_p *= P f_p`` in place, ``f_p = min(1, C / (P sqrt(total_p) + 10⁻⁶))`` (a NaN
    norm stays NaN, as NumPy's ``minimum`` keeps it)."""
    T = delta.dtype.type
    P = delta.shape[0]
    factor = T(max_grad_norm) / (T(P) * (total ** T(0.5)) + T(CLIP_EPS))
    factor[factor > 1] = 1
    delta *= (factor * T(P))[:, None]


def clip_example_rows(inputs, deltas, max_grad_norm, total=None):
    """Clip every example's gradient to ``max_grad_norm``: its norm summed over the layers,
    then row p of every ``δ^l`` scaled by ``P min(1, C / (‖g_p‖ + 10⁻⁶))``, in place.

    Parameters
    ----------
    inputs : list of arrays, ``a^{l-1}`` (P, n_{l-1}) for l = 1..L
    deltas : list of arrays, ``δ^l`` (P, n_l) for l = 1..L
    max_grad_norm : float
    total : array (P,), optional
        The workspace of the squared norms (made when not given); holds
        ``Σ_l (‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²`` after the call.
    """
    if total is None:
        total = deltas[0][:, 0].copy()
    for l, (a, d) in enumerate(zip(inputs, deltas)):
        example_norms_sq(a, d, total, accumulate=l > 0)
    for d in deltas:
        clip_rows(d, total, max_grad_norm)
    return total
