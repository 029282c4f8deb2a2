"""The optimizer's step inside the compiled epoch (:mod:`gpubp.kernels.cpu_epoch`).

Every optimizer but plain SGD (fused into the weight-gradient GEMM) steps layer by layer
inside the backward pass: :func:`_step_layer` runs the optimizer's fused loop of
:mod:`gpubp.kernels.cpu_update` (SGD with momentum, Adam/AdamW, RMSprop) over ``W^l`` and
``b^l`` as soon as their gradients are made, while they are still in cache (after ``W^l``
has served ``δ^{l-1}``). A clipped gradient needs the whole of it first: then, after the
backward pass, :func:`_apply` clips it and runs the same loop over the flat parameter
vector, per block where the weights' decay is not the biases'. Both do the same
arithmetic on every element (the loops are elementwise), so their results are equal bit
for bit (tests/test_fused_steps.py). Inlined
(``inline="always"``) into ``_epoch`` and not cached on their own: they compile the
loops of other files in, and the compiled epoch's cache digest covers this file (see
"JIT cache" in :mod:`gpubp.kernels.cpu_epoch`).
"""

import math

from numba import njit

from gpubp.kernels.cpu_update import _adam, _clip, _rmsprop, _sgd
from gpubp.kernels.epoch_args import ADAM, RMSPROP

# how _backward updates (its ``fused[0]``): not at all (_apply after it, or no update),
# plain SGD in the weight-gradient GEMM, or any optimizer's step per layer (_step_layer)
UNFUSED, FUSED_SGD, FUSED_STEP = 0, 1, 2


@njit(error_model="numpy", inline="always")
def _step_layer(buffers, layout, update, l, fused):
    """The optimizer's step on ``W^l`` and ``b^l`` alone, from their gradients in
    ``nabla``; ``fused`` is ``(mode, step, decay_w, lr)`` (see :func:`_apply`)."""
    _, step, decay_w, lr = fused
    theta, nabla, m, v, c, sizes = (buffers.theta, buffers.nabla, update.m, update.v,
                                    update.c, layout.sizes)
    w = layout.w_offsets[l - 1]
    b = w + sizes[l - 1] * sizes[l]
    end = b + sizes[l]
    _span(theta[w:b], nabla[w:b], (m[w:b], v[w:b], c[w:b]), update, step, decay_w, lr)
    _span(theta[b:end], nabla[b:end], (m[b:end], v[b:end], c[b:end]), update, step,
          update.weight_decay, lr)


@njit(error_model="numpy", inline="always")
def _apply(buffers, layout, update, step, decay_w, lr):
    """The optimizer's step ``step`` (1-based) at rate ``lr``, after the clipping of the
    gradient: one fused pass over the flat vector, or, with a penalty (the weights' decay
    ``decay_w`` is not the biases'), one per block."""
    theta, nabla, m, v, c, sizes = (buffers.theta, buffers.nabla, update.m, update.v,
                                    update.c, layout.sizes)
    if update.clip_norm > 0 or update.clip_value > 0:
        _clip(nabla, update.clip_norm, update.clip_value)
    if decay_w == update.weight_decay:
        _span(theta, nabla, (m, v, c), update, step, update.weight_decay, lr)
        return
    for l in range(1, sizes.size):
        _step_layer(buffers, layout, update, l, (FUSED_STEP, step, decay_w, lr))


@njit(error_model="numpy", inline="always")
def _span(theta, nabla, state, update, step, decay, lr):
    """The optimizer's step over a span of the flat vector (its state's same spans)."""
    m, v, c = state
    if update.code == ADAM:
        b1, b2 = update.beta1, update.beta2
        eps = update.eps / math.sqrt(1 - math.pow(b2, step)) if update.eps_hat else update.eps
        _adam(theta, nabla, m, v, (lr, b1, 1 - b1, b2, 1 - b2, eps, 1 - math.pow(b1, step),
                                   1 - math.pow(b2, step), decay, 1 - lr * update.decoupled))
    elif update.code == RMSPROP:
        _rmsprop(theta, nabla, m, v, c, (lr, update.alpha, 1 - update.alpha, update.eps,
                                         decay, update.momentum), update.centered)
    else:
        _sgd(theta, nabla, m, lr, update.momentum, update.nesterov, decay,
             update.momentum != 0)
