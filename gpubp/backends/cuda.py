"""The ``cuda`` backend: CuPy arrays, cuBLAS GEMMs and the Numba CUDA fused kernels.

CuPy owns the memory and runs the dense products (``xp.matmul`` is cuBLAS); the steps in
between are the kernels of :mod:`gpubp.kernels.cuda`, launched on CuPy's *current*
stream so that they are ordered with CuPy's own work without any host synchronisation.

Host work per step is kept near zero (``docs/cuda.md`` counts it):

- the Numba views of CuPy arrays (and their flat forms) are cached by (pointer, shape,
  strides), built once and reused every step; the cache is dropped when a workspace is
  allocated with ``empty`` (a view holds its array alive, so a cached pointer can never
  be reused by another array);
- kernels are launched through :class:`gpubp.kernels.cuda.Kernel`: no per-call typing;
  and each kernel call of a step is made once per workspace: its launches are recorded
  bound (arguments checked and packed, :meth:`Kernel.bind`) under a key of the arrays'
  pointers, shapes and the scalar arguments, and replayed on every later step with the
  same key (:mod:`gpubp.backends.cuda_launches`), skipping the launch arithmetic;
- training data that fits in device memory is uploaded once per ``fit``
  (:meth:`CudaBackend.resident`) and each batch is gathered on the device; otherwise
  batches go through pinned, double-buffered staging, so uploads are truly asynchronous;
- the epoch's cost is summed on the device in float64 by the cost kernel itself.

Under ``NUMBA_ENABLE_CUDASIM=1`` (Numba's CUDA simulator) the backend uses NumPy arrays
and runs the *same* kernels and the same bookkeeping in the simulator: this is how the
GPU path is tested on machines without a GPU. Importing this module never needs CuPy or
a GPU; :func:`probe` says whether the backend is usable and, if not, why.
"""

import weakref

import numpy as np

from gpubp.activations import ACTIVATIONS, NEGATIVE_SLOPE as SLOPE, keeps_z
from gpubp.backends import cuda_probe
from gpubp.backends.base import PRECISIONS, WEIGHT_GRADS, Backend, check_options
from gpubp.backends.cuda_probe import simulated
from gpubp.backends.cuda_clipping import ExampleClipping
from gpubp.backends.cuda_launches import BoundLaunches
from gpubp.backends.cuda_rows import RESIDENT_FRACTION, CudaRows  # noqa: F401 - re-exported
from gpubp.kernels.dropout import unscaling

# weight_grad="auto": the fused kernel while a layer's product 2 P (n_in + 1) n_out stays
# at or below this many flops, cuBLAS and a column sum above (docs/cuda.md, "the size rule").
FUSED_MAX_FLOP = 2**25
MAX_VIEWS = 512  # cached Numba views; more means arrays come and go, not a training loop
# CuPy's compute types (cupy/_core/_routines_linalg.pxd): DEFAULT is cuBLAS's exact
# CUBLAS_COMPUTE_32F for float32, TF32 its CUBLAS_COMPUTE_32F_FAST_TF32 (tensor cores)
COMPUTE_TYPES = {"float32": 1, "tf32": 7}


class CudaBackend(CudaRows, BoundLaunches, ExampleClipping, Backend):
    """CuPy arrays and cuBLAS GEMMs plus the Numba CUDA fused kernels.

    Parameters
    ----------
    weight_grad : {"auto", "fused", "cublas"}
        How ``∂W, ∂b`` are computed: ``"fused"`` in one tiled kernel, ``"cublas"`` as
        ``a^{l-1 T} δ`` through cuBLAS plus a CuPy column sum, ``"auto"`` (default) by
        the layer's size (:data:`FUSED_MAX_FLOP`).
    precision : {"float32", "tf32"}
        The arithmetic of the float32 GEMMs: ``"float32"`` (default) exact, whatever
        ``CUPY_TF32`` says; ``"tf32"`` cuBLAS's TF32 tensor-core math (10-bit mantissa
        products, float32 sums: JAX's default, PyTorch's
        ``set_float32_matmul_precision("high")``; its error is in docs/cuda.md). float64
        GEMMs, the fused kernels and the simulator are unaffected.
    **options
        Options meant for other backends are checked and ignored; an option no backend
        takes is a TypeError (see :data:`gpubp.backends.base.BACKEND_OPTIONS`).

    Attributes
    ----------
    counts : dict
        Host-side work done so far: ``"views"`` (Numba views built) and ``"copies"``
        (host <-> device transfers). Tests and ``docs/cuda.md`` read it per step.
    """

    name = "cuda"
    device = "cuda"

    def __init__(self, weight_grad="auto", precision="float32", **options):
        check_options(options, self.name, caller="CudaBackend()")
        if weight_grad not in WEIGHT_GRADS:
            raise ValueError(f"weight_grad must be one of {WEIGHT_GRADS}, got {weight_grad!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        from gpubp.kernels import cuda as kernels  # keeps import gpubp light: numba.cuda loads with the cuda backend only

        self.simulated = simulated()
        if self.simulated:
            xp = np
        else:
            import cupy as xp  # the caller has checked probe(); an ImportError is a bug
        super().__init__(xp=xp, kernels=kernels)
        self.weight_grad = weight_grad
        self.precision = precision
        self.counts = {"views": 0, "copies": 0, "bound": 0}
        self._launches = {}  # key of a kernel call (see _launch) -> its bound launches
        self._views = {}  # (pointer, shape, strides, dtype, flat) -> Numba view
        self._scratch = {}  # (name, shape, dtype) -> workspace of the kernels
        self._scalars = {}  # dtype -> 0-d view of the "cost" workspace
        self._resident = weakref.WeakValueDictionary()  # id -> array uploaded by resident()
        self._staging = {}  # (shape, dtype) -> [two pinned buffers, their upload events, next]
        self.cost_total = xp.zeros(1, dtype=np.float64)  # Σ example costs since reset
        # rows predicted right since reset: output_delta counts them (classifiers)
        self.correct_total = xp.zeros(1, dtype=np.int64)

    # -- Numba views and streams ------------------------------------------------------
    def _nb(self, array, flat=False):
        """A Numba view of a backend array (``flat``: 1-D), cached.

        Under the simulator the "view" is the NumPy array itself (or its flat view), so
        that the cache and its counts behave as on a GPU.
        """
        if self.simulated:
            key = (array.ctypes.data, array.shape, array.strides, array.dtype, flat)
        else:
            key = (array.data.ptr, array.shape, array.strides, array.dtype, flat)
        view = self._views.get(key)
        if view is None:
            if not array.flags.c_contiguous:
                raise ValueError(f"the CUDA kernels take C-contiguous arrays, got shape "
                                 f"{array.shape} with strides {array.strides}")
            if len(self._views) >= MAX_VIEWS:
                self._views.clear()
            view = array if self.simulated else self._wrap(array)
            if flat:
                view = view.reshape(array.size)
            self._views[key] = view
            self.counts["views"] += 1
        return view

    def _wrap(self, array):
        from numba import cuda  # as above: numba.cuda with the cuda backend only

        # sync=False: the kernel is queued on the same stream as the work that wrote the
        # array, so stream order already guarantees the data is ready. owner=array keeps
        # the memory alive as long as the view is cached.
        return cuda.from_cuda_array_interface(array.__cuda_array_interface__, owner=array,
                                              sync=False)

    def _stream(self):
        """CuPy's current stream as the ``cuda.core`` stream a Kernel launches on."""
        if self.simulated:
            return 0
        # ptr 0 is CuPy's null stream, the legacy default stream.
        return self.kernels.stream_of_handle(self.xp.cuda.get_current_stream().ptr)

    def _workspace(self, name, shape, dtype):
        key = (name, shape, np.dtype(dtype))
        array = self._scratch.get(key)
        if array is None:
            array = self._scratch[key] = self.xp.empty(shape, dtype=dtype)
        return array

    # -- arrays -----------------------------------------------------------------------
    def empty(self, shape, dtype):
        # Workspaces (Network._workspace) are allocated here when they grow: let the views
        # of the old ones go, and the old memory with them. (Zeroed state, allocated once
        # by an optimizer's first step, keeps the views of that step.)
        self._views.clear()
        self._launches.clear()  # they hold views too
        return self.xp.empty(shape, dtype=dtype)

    def to_device(self, host, dtype=None, out=None):
        self.counts["copies"] += 1
        if self.simulated or out is None:
            return super().to_device(host, dtype=dtype, out=out)
        # ndarray.set copies host -> device on the current stream.
        out.set(np.ascontiguousarray(host, dtype=out.dtype))
        return out

    def to_host(self, array):
        self.counts["copies"] += 1
        if self.simulated:
            return np.array(array, copy=True)
        return self.xp.asnumpy(array)  # CuPy refuses implicit conversion by np.array

    def synchronize(self):
        if not self.simulated:
            self.xp.cuda.get_current_stream().synchronize()

    # -- the epoch's cost ------------------------------------------------------------------
    def cost_sum(self):
        """Start summing the example costs of an epoch: ``acc.add(cost, P)``, ``float(acc)``.

        The cost kernel already adds every batch's sum to :attr:`cost_total` (float64, on
        the device), so ``add`` does nothing and ``float`` is the epoch's one sync.
        """
        self.cost_total.fill(0)
        return _DeviceCostSum(self.cost_total)

    def correct_sum(self, loss):
        """Start counting an epoch's right predictions: ``acc.add(a, y)``, ``float(acc)``.

        ``output_delta`` already counts each batch's rows into :attr:`correct_total` (an
        int64 on the device, for the losses of :func:`gpubp.kernels.cuda.count_code`), so ``add`` does
        nothing and ``float`` is one read per epoch."""
        self.correct_total.fill(0)
        return _DeviceCostSum(self.correct_total)

    # -- kernels ----------------------------------------------------------------------
    def _gemm_precision(self, dtype):
        """Make CuPy's float32 GEMMs this backend's :attr:`precision`. CuPy keeps one
        compute type per dtype for the process: it is read (cheaply) before each GEMM
        and set only when another network (or ``CUPY_TF32``) left it different."""
        if self.simulated or dtype != np.float32:
            return
        core, wanted = self.xp._core, COMPUTE_TYPES[self.precision]
        if core.get_compute_type(np.float32) != wanted:
            core.set_compute_type(np.float32, wanted)

    def matmul(self, a, b, out):
        self._gemm_precision(out.dtype)
        return self.xp.matmul(a, b, out=out)

    def bias_activation(self, z, b, activation, slope=SLOPE, z_out=None, dropout=None):
        if dropout is not None:
            self._dropout_forward(z, b, activation, dropout, slope, z_out)
            return
        flat = ACTIVATIONS[activation].elementwise
        self._launch("bias_activation", (z, b) if z_out is None else (z, b, z_out),
                     (activation, slope),
                     lambda: self.kernels.bias_activation(
                         self._nb(z, flat=flat), self._nb(b), activation, slope,
                         None if z_out is None else self._nb(z_out, flat=flat),
                         stream=self._stream()))

    def output_delta(self, a, y, activation, loss, delta, loss_param=0.0, w=None):
        """Launch the fused output kernel; returns the mean cost as a 0-d backend array.

        The cost stays on the device (converting it would synchronise); ``float(cost)``
        works both for CuPy and, under the simulator, NumPy. The returned array is the
        backend's: the next call overwrites it. The sum of the example costs is added to
        :attr:`cost_total`.
        """
        P, n = a.shape
        partials = self._workspace("partials", (self.kernels.delta_blocks(P, n),), a.dtype)
        cost = self._workspace("cost", (1,), a.dtype)
        scalar = self._scalars.get(a.dtype)
        if scalar is None or scalar.base is not cost:
            scalar = self._scalars[a.dtype] = cost.reshape(())
        counted = self.kernels.count_code(loss) != 0
        arrays = (a, y, delta, partials, cost, self.cost_total, self.correct_total)
        self._launch("output_delta", arrays if w is None else arrays + (w,),
                     (activation, loss, loss_param),
                     lambda: self.kernels.output_delta(
                         self._nb(a), self._nb(y), activation, loss, self._nb(delta),
                         loss_param=loss_param,
                         sums=self.kernels.CostSums(
                             self._nb(partials), self._nb(cost), self._nb(self.cost_total),
                             None if w is None else self._nb(w),
                             self._nb(self.correct_total) if counted else None),
                         stream=self._stream()))
        return scalar

    def hidden_delta(self, delta, a, activation, slope=SLOPE, dropout=None):
        if dropout is not None:
            self._dropout_delta(delta, a, activation, dropout, slope)
            return
        self._launch("hidden_delta", (delta, a), (activation, slope),
                     lambda: self.kernels.hidden_delta(
                         self._nb(delta, flat=True), self._nb(a, flat=True), activation,
                         slope, stream=self._stream()))

    def _dropout_forward(self, z, b, activation, drop, slope, z_out):
        """The epilogue with the mask drawn in the kernel (a fixed mask: array code);
        ``z_out`` receives ``z + b`` before the mask."""
        if drop.mask is None:
            self._drop_kernels().bias_activation(
                self._nb(z, flat=True), self._nb(b), activation, drop, slope,
                None if z_out is None else self._nb(z_out, flat=True), stream=self._stream())
            return
        self.bias_activation(z, b, activation, slope, z_out)
        m = self.xp.asarray(drop.mask) != 0
        z *= self.xp.where(m, z.dtype.type(drop.scale), z.dtype.type(0))

    def _dropout_delta(self, delta, a, activation, drop, slope):
        """The hidden δ with the mask drawn in the kernel (a fixed mask: array code);
        ``a`` is the kept ``z`` of an activation whose ``g'`` needs it."""
        if drop.mask is None:
            self._drop_kernels().hidden_delta(self._nb(delta, flat=True), self._nb(a, flat=True),
                                              activation, drop, slope, stream=self._stream())
            return
        unscale = unscaling(drop, keeps_z(activation))
        unscaled = a if unscale == 1.0 else a * a.dtype.type(unscale)
        self.hidden_delta(delta, unscaled, activation, slope)
        m = self.xp.asarray(drop.mask) != 0
        delta *= self.xp.where(m, delta.dtype.type(drop.scale), delta.dtype.type(0))

    @staticmethod
    def _drop_kernels():
        from gpubp.kernels import cuda_dropout  # keeps import gpubp light: numba.cuda loads with the cuda backend only

        return cuda_dropout

    def uses_fused_grad(self, P, n_in, n_out):
        """Whether ``weight_bias_gradients`` of this size runs the fused kernel."""
        if self.weight_grad == "auto":
            return 2 * P * (n_in + 1) * n_out <= FUSED_MAX_FLOP
        return self.weight_grad == "fused"

    def weight_bias_gradients(self, a_prev, delta, dW, db):
        (P, n_in), n_out = a_prev.shape, delta.shape[1]
        if not self.uses_fused_grad(P, n_in, n_out):
            self.matmul(a_prev.T, delta, out=dW)
            self.xp.sum(delta, axis=0, out=db)
            return
        self._launch("weight_bias_gradients", (a_prev, delta, dW, db), (),
                     lambda: self._fused_gradients(a_prev, delta, dW, db))

    def _fused_gradients(self, a_prev, delta, dW, db):
        (P, n_in), n_out = a_prev.shape, delta.shape[1]
        splits, _ = self.kernels.grad_splits(P, n_in, n_out)
        split = self._workspace("split", (splits, n_in + 1, n_out) if splits > 1 else
                                (1, 1, 1), a_prev.dtype)
        self.kernels.weight_bias_gradients(self._nb(a_prev), self._nb(delta), self._nb(dW),
                                           self._nb(db), split=self._nb(split),
                                           stream=self._stream())

    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0):
        self._launch("sgd_update", (param, grad) if velocity is None else
                     (param, grad, velocity), (lr, momentum, nesterov, weight_decay),
                     lambda: self.kernels.sgd_update(
                         self._nb(param, flat=True), self._nb(grad, flat=True),
                         None if velocity is None else self._nb(velocity, flat=True),
                         lr, momentum, nesterov, weight_decay, stream=self._stream()))

    def adam_update(self, param, grad, m, v, hyper):
        self.kernels.adam_update(self._nb(param, flat=True), self._nb(grad, flat=True),
                                 self._nb(m, flat=True), self._nb(v, flat=True), hyper,
                                 stream=self._stream())

    def rmsprop_update(self, param, grad, square_avg, momentum_buffer, grad_avg, hyper):
        def nb(x):
            return None if x is None else self._nb(x, flat=True)

        self.kernels.rmsprop_update(nb(param), nb(grad), nb(square_avg), nb(momentum_buffer),
                                    nb(grad_avg), hyper, stream=self._stream())

    def clip_gradient(self, grad, max_norm=0.0, max_value=0.0):
        norm_sq = self._workspace("norm_sq", (1,), np.float64)
        norm_sq.fill(0)  # on CuPy an asynchronous memset on the current stream
        self.kernels.clip_gradient(self._nb(grad, flat=True), max_norm, max_value,
                                   norm_sq=self._nb(norm_sq), stream=self._stream())


class _DeviceCostSum:
    """The epoch's cost sum (or count of right rows) kept by the output kernels in a
    device scalar."""

    def __init__(self, total):
        self.total = total

    def add(self, *done):
        """Nothing to do: the kernel that computed the batch has added it already."""

    def __float__(self):
        return float(self.total[0])


def probe():
    """Whether this backend can run here, and why not (see :func:`cuda_probe.probe`)."""
    return cuda_probe.probe(_trial_kernel)


probe.cache_clear = cuda_probe.cache_clear


def _trial_kernel(xp, x):
    """relu' on ``x`` through the backend: ``δ = 2 ⊙ (x > 0)``, which differs from both
    inputs, so a kernel that did not run (or ran as the identity) cannot pass."""
    delta = xp.full(8, 2.0, dtype=xp.float32)
    CudaBackend().hidden_delta(delta.reshape(2, 4), x.reshape(2, 4), "relu")
    return [float(v) for v in xp.asnumpy(delta)] == [0.0] * 4 + [2.0] * 4
