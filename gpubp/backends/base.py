"""The backend contract, and the ``reference`` backend that implements it literally.

Every backend offers the same small set of operations on its own arrays:

========================  =====================================================
``empty/zeros``           allocate a workspace (done once per batch shape)
``to_device/to_host``     move arrays between the host (NumPy) and the backend
``matmul``                dense product into a preallocated ``out``
``bias_activation``       forward epilogue ``a = g(z + b)`` in place (``z`` kept on request)
``output_delta``          ``δ^L`` and the mean cost in one pass (rows weighted by ``w``)
``hidden_delta``          ``δ^l = (δ^{l+1} W^{l+1 T}) ⊙ g'(a^l)`` (or ``g'(z^l)``) in place
                          (both: with the layer's dropout mask when given one)
``weight_bias_gradients`` ``∂W = a^{l-1 T} δ^l`` and ``∂b = Σ_p δ^l``
``sgd_update``            fused SGD / momentum / Nesterov / weight-decay step
``adam_update``           fused Adam / AdamW step
``rmsprop_update``        fused RMSprop step (momentum, centered)
``clip_gradient``         the flat gradient clipped by its global norm or by value
``clip_example_rows``     DP-SGD: each example's δ rows scaled to clip its gradient
``count_correct``         correct predictions of a batch (the epoch's accuracy)
``resident/gather_rows``  training data on the backend once; a batch's rows gathered
``in_place/batch_order``  a device X used as given; the epoch's order where rows are read
``row_weights``           a batch's normalised sample weights, where they live
``cost_sum``              the epoch's sum of the example costs, synchronised once
``sparse_*``              first layer of a sparse ``a^0``: copy, product, gradients
========================  =====================================================

The kernel signatures are those of :mod:`gpubp.kernels.reference`, whose docstrings give
the equations and shapes. The base class implements the data movement with its array
module ``xp`` and forwards the kernels to its ``kernels`` module, so the ``reference``
backend is this class with NumPy and the reference kernels; faster backends subclass it
and replace what they fuse.
"""

import difflib

import numpy as np

from gpubp import losses
from gpubp.data import mapped
from gpubp.kernels import reference as reference_kernels
from gpubp.kernels.reference_private import CLIP_EPS

WEIGHT_GRADS = ("auto", "fused", "cublas")
PRECISIONS = ("float32", "tf32")  # of float32 GEMMs on CUDA (docs/cuda.md, "precision")
# The options each backend's constructor takes, and their valid values. A backend accepts
# (after checking their values) the options of the others too, and ignores them, so that
# one set of options works whatever backend a device resolves to (device="cuda" may fall
# back to the CPU); an option no backend knows is a TypeError.
BACKEND_OPTIONS = {
    "reference": {},
    "cpu": {},
    "cuda": {"weight_grad": WEIGHT_GRADS, "precision": PRECISIONS},
}


def check_options(options, backend, caller=None, arguments=()):
    """Refuse ``options`` no backend takes (TypeError) and invalid values (ValueError).

    Parameters
    ----------
    options : dict
        Keyword arguments meant for the backend ``backend``.
    backend : str
        The backend's name (its own options are listed first in the message).
    caller : str or None
        Who received them, as Python names a function in its own message
        (``"Network()"``); None names the backend's class.
    arguments : sequence of str
        The caller's own keyword arguments, listed (and suggested for a misspelling).
    """
    known = {}
    for name in (backend, *BACKEND_OPTIONS):
        for key, values in BACKEND_OPTIONS.get(name, {}).items():
            known.setdefault(key, (name, values))
    for key, value in options.items():
        if key not in known:
            caller = caller or f"backend {backend!r}"
            close = difflib.get_close_matches(key, [*arguments, *known], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            own = ", ".join(BACKEND_OPTIONS.get(backend, {})) or "none"
            others = "; ".join(f"{k} (backend {b!r}: one of {v})" for k, (b, v) in known.items())
            listed = f"{caller} takes {', '.join(arguments)}, and backend options; " \
                if arguments else ""
            raise TypeError(f"{caller} got an unexpected keyword argument {key!r}{hint}. "
                            f"{listed}backend {backend!r} takes {own} of its own; the "
                            f"backend options are {others or 'none'}")
        values = known[key][1]
        if not isinstance(value, str) or value not in values:
            raise ValueError(f"{key} must be one of {values}, got {value!r}")


class Backend:
    """The ``reference`` backend: NumPy arrays and the literal NumPy kernels.

    Attributes
    ----------
    name : str
        Backend name (``"reference"``, ``"cpu"`` or ``"cuda"``).
    device : str
        Hardware the arrays live on, ``"cpu"`` or ``"cuda"``.
    xp : module
        Array module, ``numpy`` or ``cupy``.
    kernels : module
        Module with the contract's kernels.
    """

    name = "reference"
    device = "cpu"

    def __init__(self, xp=np, kernels=reference_kernels):
        self.xp = xp
        self.kernels = kernels

    @property
    def shares_host_memory(self):
        """NumPy-backed backends read host arrays directly: batches need no extra copy."""
        return self.xp is np

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} device={self.device!r}>"

    # -- arrays -----------------------------------------------------------------------
    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def to_device(self, host, dtype=None, out=None):
        """Copy a host array onto the backend (into ``out`` when given)."""
        if out is None:
            return self.xp.array(host, dtype=dtype, copy=True)
        if out is not host:
            out[...] = host
        return out

    def to_host(self, array):
        """A NumPy copy of a backend array."""
        return np.array(array, copy=True)

    def copyto(self, dst, src):
        dst[...] = src

    def resident(self, array):
        """``array`` where a step reads it best: itself on the host backends; the CUDA
        backend uploads it once (see :meth:`gather_rows`)."""
        return array

    def in_place(self, given, checked):
        """The array a run trains on: ``checked`` (the host copy the input checks made),
        or ``given`` itself where the backend can read it as it is (CUDA: a CuPy array)."""
        return checked

    def batch_order(self, order, sources):
        """The epoch's row order where :meth:`gather_rows` reads it best, given the
        ``sources`` (arrays or None) it gathers from: the host order itself here."""
        return order

    def row_weights(self, weights, index, out):
        """``out[:] = w_p = s_p P / Σ s`` (0 where ``Σ s = 0``) for ``s = weights[index]``.

        ``weights`` (P_total,) and ``index`` (P,) are both host arrays or both the
        backend's (then nothing is read back); ``out`` (P,) is the backend's.
        """
        P = out.shape[0]
        s = weights if index is None else weights[index]
        if isinstance(s, np.ndarray):
            s = s.astype(np.float64)
            total = s.sum()
            # w_p = s_p P / Σs, so that the mean over the rows of w_p c_p is Σ s_p c_p / Σ s_p
            w = s * (P / total) if total > 0 else np.zeros_like(s)
            self.to_device(w.astype(out.dtype), out=out)
            return out
        xp = self.xp  # device weights: the sign of the total is not read on the host
        s = s.astype(np.float64)
        total = s.sum()
        positive = total > 0
        out[...] = (s * xp.where(positive, P / xp.where(positive, total, 1.0), 0.0)).astype(
            out.dtype)
        return out

    def gather_rows(self, src, index, out, staging):
        """``out[:] = src[index]`` (all rows of ``src`` when ``index`` is None).

        ``src`` is a host array or one returned by :meth:`resident`; ``staging`` is a host
        buffer shaped like ``out`` for backends whose memory is not the host's.
        """
        if index is not None:  # a memory-mapped file's rows are read, not mapped
            src = mapped.take(src, index, out=out if self.shares_host_memory else staging)
        self.to_device(src, out=out)
        return out

    def cost_sum(self):
        """An accumulator of an epoch's example costs: ``acc.add(cost, P)``, ``float(acc)``.

        ``cost`` is a batch's mean cost as ``output_delta`` returns it; the sum is kept in
        float64 (the CUDA backend keeps it on the device, summed by its cost kernel).
        """
        return CostSum()

    def correct_sum(self, loss):
        """An accumulator of an epoch's right predictions: ``acc.add(a, y)`` after each
        batch's forward pass (``a``, ``y`` its outputs and targets), ``float(acc)``.
        The CUDA backend counts them in its output kernel instead (``add`` does nothing)."""
        return CorrectSum(self, loss)

    def all_finite(self, arrays):
        return all(bool(self.xp.isfinite(a).all()) for a in arrays)

    def synchronize(self):
        """Wait for queued work (a no-op on the host)."""

    # -- kernels ----------------------------------------------------------------------
    def matmul(self, a, b, out):
        return self.xp.matmul(a, b, out=out)

    def bias_activation(self, z, b, activation, slope=reference_kernels.SLOPE, z_out=None,
                        dropout=None):
        """``a = g(z + b)`` (``z + b`` kept in ``z_out`` when given); with ``dropout``
        (a :class:`~gpubp.kernels.dropout.Drop`), ``g(z + b) ⊙ m / (1 − p)``."""
        if dropout is None:
            self.kernels.bias_activation(z, b, activation, slope, z_out)
        else:
            self.kernels.bias_activation(z, b, activation, slope, z_out, dropout=dropout)

    def output_delta(self, a, y, activation, loss, delta, loss_param=0.0, w=None):
        return self.kernels.output_delta(a, y, activation, loss, delta, loss_param, w)

    def hidden_delta(self, delta, a, activation, slope=reference_kernels.SLOPE, dropout=None):
        """``δ ⊙= g'(a)``; with ``dropout``, ``δ ⊙= g'(a (1 − p)) ⊙ m / (1 − p)``."""
        if dropout is None:
            self.kernels.hidden_delta(delta, a, activation, slope)
        else:
            self.kernels.hidden_delta(delta, a, activation, slope, dropout=dropout)

    def weight_bias_gradients(self, a_prev, delta, dW, db):
        self.kernels.weight_bias_gradients(a_prev, delta, dW, db)

    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0):
        self.kernels.sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay)

    def adam_update(self, param, grad, m, v, hyper):
        self.kernels.adam_update(param, grad, m, v, hyper)

    def rmsprop_update(self, param, grad, square_avg, momentum_buffer, grad_avg, hyper):
        self.kernels.rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, hyper)

    def clip_gradient(self, grad, max_norm=0.0, max_value=0.0):
        """Clip the flat ``grad`` in place (:func:`gpubp.kernels.reference.clip_gradient`)."""
        self.kernels.clip_gradient(grad, max_norm, max_value)

    def clip_example_rows(self, inputs, deltas, max_grad_norm):
        """DP-SGD's clipping: row p of every ``δ^l`` scaled in place by
        ``P min(1, C / (‖g_p‖ + 10⁻⁶))``, ``‖g_p‖² = P² Σ_l (‖a_p^{l-1}‖² + 1) ‖δ_p^l‖²``
        (:mod:`gpubp.core.private_step`; the twin of the CUDA kernels is
        :func:`gpubp.kernels.reference_private.clip_example_rows`).

        Parameters
        ----------
        inputs : list, ``a^{l-1}`` (P, n_{l-1}) of l = 1..L (``a^0`` may be sparse)
        deltas : list, ``δ^l`` (P, n_l) of l = 1..L, each carrying the batch's ``1/P``
        max_grad_norm : float
        """
        xp, P, dtype = self.xp, deltas[0].shape[0], deltas[0].dtype
        norms = xp.empty((len(deltas), P), dtype=dtype)  # ‖∂c_p/∂θ^l‖, layer by layer
        for l, (a, d) in enumerate(zip(inputs, deltas)):
            if hasattr(a, "multiply"):  # a sparse a^0 (SciPy or cupyx) stays sparse
                squares = xp.asarray(a.multiply(a).sum(axis=1)).ravel().astype(dtype) + 1
            else:
                squares = xp.einsum("pi,pi->p", a, a) + 1
            norms[l] = xp.sqrt(squares * xp.einsum("pj,pj->p", d, d)) * P
        total = xp.sqrt(xp.einsum("lp,lp->p", norms, norms))
        scale = xp.minimum(1.0, max_grad_norm / (total + CLIP_EPS)).astype(dtype) * P
        for d in deltas:
            d *= scale[:, None]

    def count_correct(self, a, y, loss):
        """Rows of ``a`` (P, n_L) whose labels match the targets ``y``, as a backend scalar.

        The labels are those of :func:`gpubp.core.metrics.accuracy` (arg-max for
        ``cross_entropy``, every output at 0.5 otherwise). Written with ``xp`` so that on
        CuPy the count stays on the device (no synchronisation per batch).
        """
        xp = self.xp
        if losses.LOSSES[loss].targets == "labels":  # one class per row
            return (xp.argmax(a, axis=1) == xp.argmax(y, axis=1)).sum()
        return xp.all((a > 0.5) == (y > 0.5), axis=1).sum()

    # -- weighted rows and sparse inputs (array-module code: NumPy or CuPy alike) -------------
    def sparse_to_device(self, matrix):
        """A host SciPy sparse batch as this backend's CSR matrix (``cupyx`` on CUDA)."""
        if self.xp is np:
            return matrix.tocsr()
        import cupyx.scipy.sparse as device_sparse  # optional: CuPy, on the cuda backend only

        return device_sparse.csr_matrix(matrix.tocsr())

    def sparse_matmul(self, a, b, out):
        """``out = a @ b`` for a sparse ``a`` (P, n) and a dense ``b`` (n, m)."""
        out[...] = a @ b

    def sparse_weight_bias_gradients(self, a_prev, delta, dW, db):
        """``dW = a_prevᵀ δ`` with a sparse ``a_prev`` (a sparse-transpose x dense product,
        never densifying the inputs) and ``db = Σ_p δ_p``."""
        dW[...] = a_prev.T @ delta
        self.xp.sum(delta, axis=0, out=db)


class CostSum:
    """``Σ cost_b P_b`` over an epoch's batches, in float64 (see :meth:`Backend.cost_sum`)."""

    def __init__(self):
        self.total = 0.0

    def add(self, cost, P):
        self.total = self.total + float(cost) * P

    def __float__(self):
        return float(self.total)


class CorrectSum:
    """Right predictions over an epoch's batches (see :meth:`Backend.correct_sum`)."""

    def __init__(self, backend, loss):
        self.backend, self.loss, self.total = backend, loss, 0

    def add(self, a, y):
        self.total = self.total + self.backend.count_correct(a, y, self.loss)

    def __float__(self):
        return float(self.total)
