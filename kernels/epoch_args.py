"""The arguments of the compiled CPU epoch, as named structures.

:func:`gpubp.kernels.cpu_epoch.train_epoch` takes five named tuples. It hands the compiled
epoch their fields as plain tuples, which Numba types from a cached fingerprint, and the
compiled code names them again (a namedtuple of arrays and scalars is a Numba
``NamedTuple``, cached like any other type). Build them with the class methods below,
which fix each field's type, so that every call shares one compiled specialisation per
dtype:

- :class:`Batches` (:meth:`Batches.of`): ``X``, ``Y``, the epoch's row ``order``, the
  ``batch_size`` and the ``delta_scale`` on ``δ^L``;
- :class:`Buffers`: the network's flat ``theta``/``nabla`` and workspaces;
- :class:`Layout`: the layer widths and where each layer's block starts in the buffers;
- :class:`Codes` (:meth:`Codes.of`): the activation and loss codes, the log-losses' clip
  bounds, whether to count correct predictions;
- :class:`Update` (:meth:`Update.sgd`, :meth:`~Update.adam`, :meth:`~Update.rmsprop`,
  :meth:`~Update.gradient_only`, :meth:`~Update.per_step`): the optimizer's code, state,
  hyperparameters, step count, rates per step and clipping.

Layouts (``cap`` = the workspaces' row capacity, ``P`` ≤ ``cap`` the rows of a batch):

- ``theta``/``nabla``: ``W^1`` (row-major), ``b^1``, ``W^2``, ... from ``w_offsets[l-1]``;
- ``acts``: ``a^l`` for ``l = 0..L``, block ``l`` at ``a_offsets[l]``, its first ``P``
  rows contiguous, the layout of ``Network.activations`` (a batch of consecutive rows of
  ``X`` is read in place, not copied into ``a^0``);
- ``acts`` also holds, after the ``a^l``, a block per layer whose ``g'`` needs ``z``
  (gelu, gelu_tanh, silu) at ``z_offsets[l]`` (-1 for the layers that keep none): the
  compiled epoch's forward pass writes ``g'(z^l)`` there (the per-kernel step keeps
  ``z^l`` itself);
- ``deltas``: ``δ^l`` for ``l = 1..L`` at ``d_offsets[l]`` (entry 0 unused);
- ``targets``: ``(cap, n_L)``, the gathered ``y`` rows; ``row_weights``: ``(cap,)``.
"""

from collections import namedtuple

import numpy as np

from gpubp.kernels.dropout import threshold

SGD, ADAM, NONE, RMSPROP = 0, 1, 2, 3  # NONE: gradients only, the caller sums and updates (MPI)


class Batches(namedtuple("Batches", "X Y order batch_size delta_scale dropout_key "
                                    "first_batch weights first_row")):
    """The epoch's batches: batch ``k`` is rows ``order[k B : (k + 1) B]``.

    ``X`` (P_total, n_0) and ``Y`` (P_total, n_L) C-contiguous, of ``theta``'s dtype;
    ``order`` int64 (P_total,); ``batch_size`` ``B`` (the last batch may be shorter);
    ``delta_scale`` the factor on ``δ^L`` (``P_local / P_global`` on a rank of a
    data-parallel run, so that the summed gradients carry the global ``1/P``; else 1);
    ``dropout_key`` (uint64) the epoch's dropout key and ``first_batch`` the epoch's index
    of batch 0 here: batch ``k`` draws the masks of ``bits(dropout_key, first_batch + k)``
    (:mod:`gpubp.kernels.dropout`; unused where ``Codes.drop_threshold`` is 0).
    ``weights`` float64, the rows' sample weights ``s`` (P_total,), or empty: unweighted
    (each batch's cost is then ``Σ s_p c_p / Σ s_p``, as in ``gpubp.core.backprop.load``).
    ``first_row``: the place of each batch's row 0 in its global batch, for the masks (a
    rank's share of a data-parallel step; 0 otherwise, :func:`gpubp.kernels.dropout.from_row`).
    """

    __slots__ = ()

    @classmethod
    def of(cls, X, Y, order, batch_size, delta_scale=1.0, dropout_key=0, first_batch=0,
           weights=None):
        """With the field types the compiled epoch is specialised for (``first_row`` 0:
        ``._replace(first_row=int(r))`` for a rank's share)."""
        weights = np.empty(0) if weights is None else np.ascontiguousarray(weights, np.float64)
        return cls(X, Y, order, int(batch_size), float(delta_scale), np.uint64(dropout_key),
                   int(first_batch), weights, 0)


class Buffers(namedtuple("Buffers", "theta nabla acts deltas targets row_weights")):
    """Flat parameters (updated in place) and gradients, shape (N,), and the workspaces,
    laid out as in the module docstring (``row_weights`` (cap,): a weighted batch's
    normalised row weights ``w_p = s_p P / Σ s``). On return ``nabla`` holds the gradient of the
    call's last step (plain SGD folds the others' ``∂W`` straight into ``W``)."""

    __slots__ = ()


class Layout(namedtuple("Layout", "sizes w_offsets a_offsets d_offsets z_offsets loops")):
    """int64 arrays: ``sizes`` (L + 1,) the layer widths, ``w_offsets`` (L,) where ``W^l``
    starts in ``theta``, ``a_offsets``/``d_offsets`` (L + 1,) where ``a^l`` and ``δ^l``
    start in ``acts`` and ``deltas``, ``z_offsets`` (L + 1,) where a kept ``g'(z^l)`` starts
    in ``acts`` (-1: not kept), ``loops`` (L,) 1 where layer ``l``'s products run as
    loop nests (:mod:`gpubp.kernels.cpu_small_gemm`), 0 by BLAS."""

    __slots__ = ()


class Codes(namedtuple("Codes", "forward derivative loss tiny one_minus classifier "
                                "drop_threshold drop_keep drop_scale slope loss_param")):
    """What the network computes: the activation codes of layers 1..L (int64, (L,)) as
    :func:`gpubp.kernels.cpu.bias_activation` dispatches them (``forward``: float32
    sigmoid and tanh by their vectorised variants) and as the derivative kernels take
    them (``derivative``); the ``loss`` code; ``tiny`` and ``one_minus``, the log-losses'
    clip bounds for the dtype; ``classifier``, whether to count correct predictions;
    the dropout of layers 1..L (``(L,)``, the output layer's 0): ``drop_threshold``
    (uint64, 0 without dropout), ``drop_keep`` ``1 − p`` and ``drop_scale`` ``1/(1 − p)``
    (in ``theta``'s dtype); ``slope``, leaky_relu's negative slope.; ``loss_param``, the loss's parameter (label
    smoothing ``ε``, Huber's ``δ``)."""

    __slots__ = ()

    @classmethod
    def of(cls, forward, derivative, loss, clip, classifier, dropout, slope=0.01,
           loss_param=0.0):
        """With the field types the compiled epoch is specialised for; ``clip`` the
        log-losses' ``(tiny, one_minus)``, ``dropout`` the ``(rates of the hidden
        layers, dtype)``."""
        rates, dtype = dropout
        p = np.array(list(rates) + [0.0])
        thresholds = [threshold(r) for r in p]
        return cls(np.asarray(forward, np.int64), np.asarray(derivative, np.int64), int(loss),
                   float(clip[0]), float(clip[1]), bool(classifier),
                   np.array(thresholds, np.uint64), (1 - p).astype(dtype),
                   (1 / (1 - p)).astype(dtype), float(slope), float(loss_param))


_HYPER = dict(lr=0.0, momentum=0.0, nesterov=False, weight_decay=0.0, beta1=0.0, beta2=0.0,
              eps=0.0, step=0, penalty=0.0, eps_hat=False, decoupled=0.0, alpha=0.0,
              centered=False, clip_norm=0.0, clip_value=0.0)  # their defaults fix their types


class Update(namedtuple("Update", "code m v c lrs " + " ".join(_HYPER))):
    """The update after each step: ``code`` ``SGD``, ``ADAM``, ``RMSPROP`` or ``NONE`` (no
    update: ``nabla`` is left holding the gradient of the one batch, for the caller to sum
    over the ranks of a data-parallel run and apply); the state ``m`` (SGD's velocity,
    Adam's ``m``, RMSprop's square average), ``v`` (Adam's ``v``, RMSprop's momentum
    buffer) and ``c`` (RMSprop's centered gradient average), arrays (N,) never read when
    unused; ``lrs``, float64, the learning rate of each step of the call (a per-step
    schedule) or empty (``lr`` for every step); the hyperparameters (those of other
    optimizers are ignored): ``decoupled`` AdamW's decay, ``alpha`` and ``centered``
    RMSprop's, ``clip_norm``/``clip_value`` the clipping of the flat gradient before each
    update (0: none); ``step``, the steps taken
    before this call (Adam's ``t`` of the first step is ``step + 1``); ``penalty``, the
    optimizer's L2 penalty on the weights alone (``α W / P`` joins the weights' gradient of
    a batch of ``P`` rows, ``α ‖W‖² / 2P`` its cost; scikit-learn's ``alpha``); ``eps_hat``,
    Adam's ε added to the uncorrected ``√v`` (scikit-learn's form).

    Build it with :meth:`sgd`, :meth:`adam`, :meth:`rmsprop` or :meth:`gradient_only`,
    which give every field the type the compiled epoch is specialised for, and
    :meth:`per_step` for the rates and the clipping.
    """

    __slots__ = ()

    @classmethod
    def _typed(cls, code, m, v, c=None, **hyper):
        hyper = {k: type(default)(hyper.get(k, default)) for k, default in _HYPER.items()}
        return cls(int(code), m, v, v if c is None else c, _NO_RATES, **hyper)

    def per_step(self, lrs=None, clip_norm=0.0, clip_value=0.0):
        """This update with a learning rate per step (None: ``lr`` throughout) and the
        clipping of the gradient before each step."""
        lrs = _NO_RATES if lrs is None else np.ascontiguousarray(lrs, dtype=np.float64)
        return self._replace(lrs=lrs, clip_norm=float(clip_norm), clip_value=float(clip_value))

    @classmethod
    def sgd(cls, lr, momentum, nesterov, weight_decay, velocity, step, penalty=0.0):
        """SGD; ``velocity`` any array (N,) of the dtype when there is no momentum."""
        return cls._typed(SGD, velocity, velocity, lr=lr, momentum=momentum,
                          nesterov=nesterov, weight_decay=weight_decay, step=step,
                          penalty=penalty)

    @classmethod
    def adam(cls, lr, betas, eps, weight_decay, state, step, penalty=0.0, decoupled=0.0):
        """Adam, ``betas`` its ``(beta1, beta2)``, ``eps`` its ``(eps, eps_hat)``,
        ``state`` its ``(m, v)``; AdamW with its ``decoupled`` decay."""
        return cls._typed(ADAM, *state, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps[0],
                          eps_hat=eps[1], weight_decay=weight_decay, step=step,
                          penalty=penalty, decoupled=decoupled)

    @classmethod
    def rmsprop(cls, lr, alpha, eps, weight_decay, momentum, state, step):
        """RMSprop, ``state`` its ``(square_avg, momentum_buffer, grad_avg)`` (any array
        (N,) of the dtype for an unused one); centered when ``grad_avg`` is given."""
        square_avg, buf, grad_avg = state
        return cls._typed(RMSPROP, square_avg, buf if buf is not None else square_avg,
                          grad_avg if grad_avg is not None else square_avg, lr=lr,
                          alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                          centered=grad_avg is not None, step=step)

    @classmethod
    def gradient_only(cls, nabla):
        """No update: the gradient of one batch, left in ``nabla``."""
        return cls._typed(NONE, nabla, nabla)


_NO_RATES = np.empty(0, np.float64)
