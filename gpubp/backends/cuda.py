"""The ``cuda`` backend: CuPy arrays, cuBLAS GEMMs and the Numba CUDA fused kernels.

CuPy owns the memory and runs the dense products (``xp.matmul`` is cuBLAS); the steps in
between are the kernels of :mod:`gpubp.kernels.cuda`, launched on CuPy's *current*
stream so that they are ordered with CuPy's own work without any host synchronisation.
CuPy arrays are handed to Numba as zero-copy device-array views made with ``sync=False``:
Numba would otherwise synchronise on the array's stream at every launch (the
``__cuda_array_interface__`` default).

Under ``NUMBA_ENABLE_CUDASIM=1`` (Numba's CUDA simulator) the backend uses NumPy arrays
and runs the *same* kernels in the simulator: this is how the GPU path is tested on
machines without a GPU. Importing this module never needs CuPy or a GPU; :func:`probe`
says whether the backend is usable and, if not, why.
"""

import functools

import numpy as np

from gpubp.backends.base import Backend

WEIGHT_GRADS = ("fused", "cublas")


def simulated():
    """Whether Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before import)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=1)
def probe():
    """Whether the CUDA backend can run here, and why not. Never raises; cached.

    Checks, in order: CuPy imports; a CUDA driver is loadable; a device is present;
    the driver's major CUDA version is at least that of CuPy's runtime; a CuPy
    operation and a Numba CUDA kernel launch both succeed on the device (the latter
    compiles a kernel, catching a missing NVVM or a PTX the driver is too old to load).

    Returns
    -------
    usable : bool
    reason : str
        ``"Numba CUDA simulator"`` under the simulator, the device's name when usable,
        otherwise what was missing.
    """
    try:
        return _probe()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return False, f"the CUDA probe failed ({type(exc).__name__}: {exc})"


def _probe():
    if simulated():
        return True, "Numba CUDA simulator"
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA library
        return False, f"CuPy is not installed or cannot be imported ({type(exc).__name__}: {exc})"
    runtime = cupy.cuda.runtime
    try:
        driver_version = runtime.driverGetVersion()
    except Exception as exc:  # noqa: BLE001
        return False, f"no CUDA driver ({type(exc).__name__}: {exc})"
    if driver_version == 0:
        return False, "no CUDA driver is installed"
    try:
        n_devices = runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        return False, f"no CUDA device ({type(exc).__name__}: {exc})"
    if n_devices == 0:
        return False, "no CUDA device"
    runtime_version = runtime.runtimeGetVersion()
    # Only the major version must match: within one major release an older driver runs a
    # newer runtime (CUDA minor-version compatibility); what it cannot do (load too new a
    # PTX) the trial kernel below catches.
    if driver_version // 1000 < runtime_version // 1000:
        return False, (f"wrong CUDA version: the driver supports CUDA {_version(driver_version)}"
                       f" but CuPy was built for CUDA {_version(runtime_version)}")
    if not cupy.is_available():
        return False, "CuPy reports no usable CUDA device"
    try:
        x = cupy.arange(8, dtype=cupy.float32)
        if float((x @ x).get()) != 140.0:
            return False, "a trial CuPy operation gave a wrong result"
    except Exception as exc:  # noqa: BLE001
        return False, f"a trial CuPy operation failed ({type(exc).__name__}: {exc})"
    try:
        backend = CudaBackend()
        y = x.copy()
        backend.hidden_delta(y.reshape(2, 4), x.reshape(2, 4), "relu")  # y *= (x > 0)
        if not bool((y == x).all()):
            return False, "a trial Numba CUDA kernel gave a wrong result"
    except Exception as exc:  # noqa: BLE001
        return False, f"a trial Numba CUDA kernel failed ({type(exc).__name__}: {exc})"
    name = runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return True, name.decode() if isinstance(name, bytes) else str(name)


def _version(v):
    return f"{v // 1000}.{v % 1000 // 10}"


class CudaBackend(Backend):
    """CuPy arrays and cuBLAS GEMMs plus the Numba CUDA fused kernels.

    Parameters
    ----------
    weight_grad : {"fused", "cublas"}
        ``"fused"`` (default) computes ``∂W`` and ``∂b`` in one tiled kernel;
        ``"cublas"`` uses ``a^{l-1 T} δ`` through cuBLAS and a CuPy column sum, so that the
        benchmarks can compare them.
    **_
        Options meant for other backends are ignored.
    """

    name = "cuda"
    device = "cuda"

    def __init__(self, weight_grad="fused", **_):
        if weight_grad not in WEIGHT_GRADS:
            raise ValueError(f"weight_grad must be one of {WEIGHT_GRADS}, got {weight_grad!r}")
        from gpubp.kernels import cuda as kernels

        self.simulated = simulated()
        if self.simulated:
            xp = np
        else:
            import cupy as xp  # the caller has checked probe(); an ImportError is a bug
        super().__init__(xp=xp, kernels=kernels)
        self.weight_grad = weight_grad
        self._partials = {}  # (blocks, dtype) -> per-block cost sums, one per batch shape
        self._streams = {}  # CuPy stream pointer -> Numba stream wrapping it

    # -- CuPy <-> Numba ---------------------------------------------------------------
    def _nb(self, array):
        """A Numba view of a backend array (the array itself under the simulator)."""
        if self.simulated:
            return array
        from numba import cuda

        # sync=False: the kernel is queued on the same stream as the work that wrote the
        # array, so stream order already guarantees the data is ready.
        return cuda.from_cuda_array_interface(array.__cuda_array_interface__, owner=array,
                                              sync=False)

    def _stream(self):
        """CuPy's current stream as a Numba stream (0, Numba's default, in the simulator)."""
        if self.simulated:
            return 0
        from numba import cuda

        ptr = self.xp.cuda.get_current_stream().ptr
        stream = self._streams.get(ptr)
        if stream is None:
            # ptr 0 is CuPy's null stream, the legacy default stream.
            stream = cuda.legacy_default_stream() if ptr == 0 else cuda.external_stream(ptr)
            self._streams[ptr] = stream
        return stream

    # -- arrays -----------------------------------------------------------------------
    def to_device(self, host, dtype=None, out=None):
        if self.simulated or out is None:
            return super().to_device(host, dtype=dtype, out=out)
        # ndarray.set copies host -> device on the current stream.
        out.set(np.ascontiguousarray(host, dtype=out.dtype))
        return out

    def to_host(self, array):
        if self.simulated:
            return np.array(array, copy=True)
        return self.xp.asnumpy(array)  # CuPy refuses implicit conversion by np.array

    def synchronize(self):
        if not self.simulated:
            self.xp.cuda.get_current_stream().synchronize()

    # -- kernels ----------------------------------------------------------------------
    def bias_activation(self, z, b, activation):
        self.kernels.bias_activation(self._nb(z), self._nb(b), activation,
                                     stream=self._stream())

    def output_delta(self, a, y, activation, loss, delta):
        """Launch the fused output kernel; returns the mean cost as a 0-d backend array.

        The cost stays on the device (converting it would synchronise); ``float(cost)``
        works both for CuPy and, under the simulator, NumPy. Each call returns a fresh
        one-element array so that costs kept by the caller are never overwritten.
        """
        key = (self.kernels.delta_blocks(a.shape[0]), a.dtype)
        partials = self._partials.get(key)
        if partials is None:
            partials = self._partials[key] = self.xp.empty(key[0], dtype=a.dtype)
        cost = self.xp.empty(1, dtype=a.dtype)  # a pool allocation, not a cudaMalloc
        self.kernels.output_delta(self._nb(a), self._nb(y), activation, loss,
                                  self._nb(delta), partials=self._nb(partials),
                                  cost=self._nb(cost), stream=self._stream())
        return cost.reshape(())

    def hidden_delta(self, delta, a, activation):
        self.kernels.hidden_delta(self._nb(delta), self._nb(a), activation,
                                  stream=self._stream())

    def weight_bias_gradients(self, a_prev, delta, dW, db):
        if self.weight_grad == "cublas":
            self.xp.matmul(a_prev.T, delta, out=dW)
            self.xp.sum(delta, axis=0, out=db)
            return
        self.kernels.weight_bias_gradients(self._nb(a_prev), self._nb(delta), self._nb(dW),
                                           self._nb(db), stream=self._stream())

    def sgd_update(self, param, grad, velocity, lr, momentum=0.0, nesterov=False,
                   weight_decay=0.0):
        self.kernels.sgd_update(self._nb(param), self._nb(grad),
                                None if velocity is None else self._nb(velocity), lr,
                                momentum, nesterov, weight_decay, stream=self._stream())

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
        self.kernels.adam_update(self._nb(param), self._nb(grad), self._nb(m), self._nb(v),
                                 lr, beta1, beta2, eps, step, weight_decay,
                                 stream=self._stream())
