"""A fake ``cupy`` whose arrays behave like device memory: the host cannot read them.

:class:`DeviceArray` is *not* an ``np.ndarray`` subclass. As CuPy's arrays do, it

- refuses implicit conversion (``np.asarray(x)``, ``np.array(x)``) with CuPy's TypeError;
- runs NumPy functions and ufuncs only when every array argument is a device array
  (``__array_function__``/``__array_ufunc__``), so ``np.take(host, device_index)``
  raises as it does with CuPy;
- makes every explicit read of device data (``get``, ``asnumpy``, ``float``, ``int``,
  ``bool``, ``item``, ``tolist``) a counted device→host copy *and* a synchronisation.

:class:`Ledger` counts them (``d2h``, ``h2d``, ``syncs``) with a label each, so a test
can assert that a training step reads nothing back. :func:`install` puts the fake into
``sys.modules`` (``cupy``, ``cupyx``, ``cupyx.scipy.sparse``) and returns the ledger;
:data:`KERNELS` stands in for :mod:`gpubp.kernels.cuda`, running the NumPy twins on the
arrays' host storage (the kernels themselves are tested under the simulator).
"""

import contextlib
import functools
import sys
import traceback
import types

import numpy as np
import scipy.sparse

from gpubp.kernels import reference

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly.")


class Ledger:
    """Device→host copies, host→device copies and synchronisations, with where they came from."""

    def __init__(self):
        self.d2h, self.h2d, self.syncs = [], [], []
        self.launches = 0
        self.graph_launches = 0  # Graph.launch calls (each replays a captured step)
        self.events = []  # ("record" | "wait_event", stream pointer, event id), in order
        self.compute_types = {}  # dtype -> CuPy compute type (cupy._core), as set

    def _where(self):
        """The first frame in gpubp (not this file), as ``module:line``."""
        for frame in reversed(traceback.extract_stack()[:-3]):
            if "/gpubp/" in frame.filename:
                return f"{frame.filename.rsplit('/gpubp/', 1)[1]}:{frame.lineno}"
        return "?"

    def read(self, what):
        """A device→host copy, which waits for the device (refused during a capture)."""
        _no_capture(f"{what}: a device-to-host copy")
        where = self._where()
        self.d2h.append(f"{what} at {where}")
        self.syncs.append(f"{what} at {where}")

    def write(self, what):
        self.h2d.append(f"{what} at {self._where()}")

    def sync(self, what):
        self.syncs.append(f"{what} at {self._where()}")

    def counts(self):
        return {"d2h": len(self.d2h), "h2d": len(self.h2d), "syncs": len(self.syncs)}


LEDGER = Ledger()


def _no_capture(what):
    """What a stream capture cannot record (a sync, an allocation) is an error, as in
    CUDA (cudaErrorStreamCaptureUnsupported)."""
    if _STATE["capture"] is not None:
        raise RuntimeError(f"{what} during a CUDA stream capture")


def _enqueue(op):
    """Run a device operation now, or record it in the capture in progress."""
    capture = _STATE["capture"]
    if capture is not None:
        capture.append(op)
        return None
    return op()


def _unwrap(value, strict=True):
    """Host storage of device arrays inside ``value``; a NumPy array is a TypeError."""
    if isinstance(value, DeviceArray):
        return value.data_
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, strict) for v in value)
    if strict and isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError(f"Unsupported type {type(value)}")
    return value


def _wrap(value):
    if isinstance(value, (np.ndarray, np.generic)):
        _no_capture("an allocation")
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):  # CuPy reductions return 0-d device arrays
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    return value


def _binary(op, reflected=False):
    def method(self, other):
        other = _unwrap(other)
        result = op(other, self.data_) if reflected else op(self.data_, other)
        return _wrap(result)
    return method


def _inplace(op):
    def method(self, other):
        other = _unwrap(other)
        _enqueue(functools.partial(op, self.data_, other, out=self.data_))
        return self
    return method


class _Memory:
    def __init__(self, ptr):
        self.ptr = ptr


class DeviceArray:
    """Device memory (host storage ``data_``, never readable implicitly)."""

    __array_priority__ = 100

    def __init__(self, data):
        self.data_ = data

    # -- what CuPy refuses, and what it allows -------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT)

    def __array_function__(self, func, types_, args, kwargs):
        if not all(issubclass(t, DeviceArray) for t in types_):
            return NotImplemented
        try:
            return _wrap(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
        except TypeError:
            return NotImplemented

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = _unwrap(inputs)  # a NumPy array among them: TypeError, as CuPy
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3,
                "data": (self.data_.ctypes.data, False), "strides": self.strides}

    def get(self, stream=None, out=None, blocking=True):
        LEDGER.read("get")
        return self.data_.copy()

    def set(self, host, stream=None):
        _no_capture("a pageable host-to-device copy")
        LEDGER.write("set")
        self.data_[...] = host

    def item(self):
        LEDGER.read("item")
        return self.data_.item()

    def tolist(self):
        LEDGER.read("tolist")
        return self.data_.tolist()

    def __float__(self):
        LEDGER.read("float")
        return float(self.data_)

    def __int__(self):
        LEDGER.read("int")
        return int(self.data_)

    def __index__(self):
        LEDGER.read("index")
        return int(self.data_)

    def __bool__(self):
        LEDGER.read("bool")
        return bool(self.data_)

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype})"

    # -- array protocol ---------------------------------------------------------------
    shape = property(lambda self: self.data_.shape)
    dtype = property(lambda self: self.data_.dtype)
    ndim = property(lambda self: self.data_.ndim)
    size = property(lambda self: self.data_.size)
    nbytes = property(lambda self: self.data_.nbytes)
    strides = property(lambda self: self.data_.strides)
    flags = property(lambda self: self.data_.flags)
    T = property(lambda self: DeviceArray(self.data_.T))
    data = property(lambda self: _Memory(self.data_.ctypes.data))
    base = property(lambda self: None)

    def __len__(self):
        return len(self.data_)

    def __iter__(self):
        return (DeviceArray(np.asarray(row)) for row in self.data_)

    def __getitem__(self, key):
        return DeviceArray(np.asarray(self.data_[_unwrap(key, strict=False)]))

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray):
            _no_capture("a host-to-device copy")
            LEDGER.write("setitem")
        key, value = _unwrap(key, strict=False), _unwrap(value, strict=False)
        _enqueue(functools.partial(self.data_.__setitem__, key, value))

    def reshape(self, *shape):
        return DeviceArray(self.data_.reshape(*shape))

    def ravel(self):
        return DeviceArray(self.data_.ravel())

    def astype(self, dtype, copy=True):
        return DeviceArray(self.data_.astype(dtype, copy=copy))

    def copy(self):
        return DeviceArray(self.data_.copy())

    def fill(self, value):
        _enqueue(functools.partial(self.data_.fill, value))

    def view(self, dtype=None):
        return DeviceArray(self.data_.view(dtype))

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        if out is not None:
            _enqueue(functools.partial(self.data_.sum, axis=axis, dtype=dtype,
                                       keepdims=keepdims, out=_unwrap(out)))
            return out
        return _wrap(self.data_.sum(axis=axis, dtype=dtype, keepdims=keepdims))

    def __getattr__(self, name):  # max, min, all, any, argmax, mean, dot, ...
        if name in ("max", "min", "all", "any", "argmax", "mean", "dot", "nonzero", "clip"):
            method = getattr(self.data_, name)
            return lambda *a, **k: _wrap(method(*_unwrap(a), **{x: _unwrap(v) for x, v in
                                                                  k.items()}))
        raise AttributeError(name)

    __add__, __radd__ = _binary(np.add), _binary(np.add, True)
    __sub__, __rsub__ = _binary(np.subtract), _binary(np.subtract, True)
    __mul__, __rmul__ = _binary(np.multiply), _binary(np.multiply, True)
    __truediv__, __rtruediv__ = _binary(np.divide), _binary(np.divide, True)
    __pow__ = _binary(np.power)
    __matmul__, __rmatmul__ = _binary(np.matmul), _binary(np.matmul, True)
    __eq__, __ne__ = _binary(np.equal), _binary(np.not_equal)
    __lt__, __le__ = _binary(np.less), _binary(np.less_equal)
    __gt__, __ge__ = _binary(np.greater), _binary(np.greater_equal)
    __and__, __or__ = _binary(np.logical_and), _binary(np.logical_or)
    __iadd__, __isub__ = _inplace(np.add), _inplace(np.subtract)
    __imul__, __itruediv__ = _inplace(np.multiply), _inplace(np.divide)
    __hash__ = None

    def __neg__(self):
        return DeviceArray(-self.data_)

    def __abs__(self):
        return DeviceArray(np.abs(self.data_))


# -- the module ---------------------------------------------------------------------------


def _device_function(name):
    """``cupy.name``: the NumPy function on device arrays only."""
    func = getattr(np, name)

    def device(*args, **kwargs):
        args, host = _unwrap(args), {k: _unwrap(v) for k, v in kwargs.items()}
        if kwargs.get("out") is not None:  # into an existing array: capturable
            _enqueue(functools.partial(func, *args, **host))
            return kwargs["out"]
        return _wrap(func(*args, **host))
    device.__name__ = name
    return device


def _array(obj, dtype=None, copy=True, order="K"):
    if isinstance(obj, DeviceArray):
        return DeviceArray(np.array(obj.data_, dtype=dtype, copy=copy))
    LEDGER.write("array")
    return DeviceArray(np.array(obj, dtype=dtype, copy=True))


def _asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if not isinstance(a, DeviceArray):
        return np.asarray(a)
    LEDGER.read("asnumpy")
    return a.data_.copy()


class _Stream:
    made = 0

    def __init__(self, ptr=None, non_blocking=False):
        _Stream.made += 1
        self.ptr = 1000 + _Stream.made if ptr is None else ptr
        self.non_blocking = non_blocking

    def synchronize(self):
        _no_capture("stream.synchronize")
        LEDGER.sync("stream.synchronize")

    def begin_capture(self, mode=None):
        """CuPy's: not on the legacy default stream; records until end_capture."""
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _STATE["capture"] is not None:
            raise RuntimeError("a capture is already in progress")
        _STATE["capture"] = []
        _STATE["capturing"] = self

    def end_capture(self):
        ops, _STATE["capture"], _STATE["capturing"] = _STATE["capture"], None, None
        LEDGER.captures = getattr(LEDGER, "captures", 0) + 1
        return _Graph(ops)

    def is_capturing(self):
        return _STATE["capturing"] is self

    def wait_event(self, event):
        LEDGER.events.append(("wait_event", self.ptr, id(event)))

    def __enter__(self):
        _STATE["stream"] = self
        return self

    def __exit__(self, *exc):
        _STATE["stream"] = _STATE["null"]


class _Graph:
    """``cupy.cuda.Graph``: the operations recorded by a capture, run again on launch."""

    def __init__(self, ops):
        self.ops = ops

    def launch(self, stream=None):
        _no_capture("Graph.launch")
        LEDGER.graph_launches += 1
        for op in self.ops:
            op()

    def upload(self, stream=None):
        pass


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        pass

    def record(self, stream=None):
        stream = _STATE["stream"] if stream is None else stream
        LEDGER.events.append(("record", stream.ptr, id(self)))

    def synchronize(self):
        LEDGER.sync("event.synchronize")


class _Device:
    free = 2**30

    def __init__(self, device=None):
        self.id = 0 if device is None else device

    @property
    def mem_info(self):
        return (_Device.free, 2**31)

    def use(self):
        pass

    def synchronize(self):
        LEDGER.sync("device.synchronize")


_STATE = {"null": _Stream(0), "capture": None, "capturing": None}
_STATE["stream"] = _STATE["null"]


class DeviceCSR:
    """``cupyx.scipy.sparse.csr_matrix`` of a host SciPy matrix (uploaded)."""

    def __init__(self, matrix):
        if isinstance(matrix, DeviceCSR):
            matrix = matrix.m
        else:
            LEDGER.write("csr_matrix")
        self.m = scipy.sparse.csr_matrix(matrix)
        self.shape = self.m.shape

    @property
    def T(self):
        out = DeviceCSR.__new__(DeviceCSR)
        out.m, out.shape = self.m.T, self.m.T.shape
        return out

    def __matmul__(self, other):
        if not isinstance(other, DeviceArray):
            raise TypeError(f"Unsupported type {type(other)}")
        return DeviceArray(np.asarray(self.m @ other.data_))


def module():
    """The fake ``cupy`` module."""
    xp = types.ModuleType("cupy")
    xp.__name__ = "cupy"
    xp.ndarray = DeviceArray
    for name in ("float32", "float64", "int64", "int32", "bool_", "intp"):
        setattr(xp, name, getattr(np, name))
    for name in ("empty", "zeros", "ones", "full", "arange", "take", "matmul", "sum",
                 "argmax", "all", "any", "isfinite", "dot", "vdot", "where", "maximum",
                 "minimum", "sqrt", "exp", "log", "abs", "copyto", "concatenate",
                 "zeros_like", "empty_like", "multiply", "add", "divide", "clip",
                 "array_equal"):
        setattr(xp, name, _device_function(name))
    xp.array = _array
    xp.asarray = lambda a, dtype=None: a if isinstance(a, DeviceArray) and dtype in (
        None, a.dtype) else _array(a, dtype)
    xp.asnumpy = _asnumpy
    xp.get_array_module = lambda *a: xp
    xp.is_available = lambda: True
    xp.from_dlpack = lambda a: _array(np.from_dlpack(a))
    xp._core = types.SimpleNamespace(
        get_compute_type=lambda dtype: LEDGER.compute_types.get(np.dtype(dtype), 0),
        set_compute_type=lambda dtype, kind: LEDGER.compute_types.__setitem__(
            np.dtype(dtype), kind))
    xp.cuda = types.SimpleNamespace(
        get_current_stream=lambda: _STATE["stream"], Stream=_Stream, Event=_Event, Graph=_Graph,
        Device=_Device,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, driverGetVersion=lambda: 13000,
                                      runtimeGetVersion=lambda: 13000,
                                      getDeviceProperties=lambda i: {"name": b"Fake GPU"}))
    return xp


def install(monkeypatch):
    """Put the fake CuPy in ``sys.modules``; a fresh :class:`Ledger` (returned) counts."""
    global LEDGER
    LEDGER = Ledger()
    sparse = types.ModuleType("cupyx.scipy.sparse")
    sparse.csr_matrix = DeviceCSR
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = lambda shape, dtype=np.float64: np.empty(shape, dtype)
    cupyx.scipy = types.SimpleNamespace(sparse=sparse)
    monkeypatch.setitem(sys.modules, "cupy", module())
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.sparse", sparse)
    return LEDGER


# -- the kernels: the NumPy twins on the host storage ----------------------------------------


def _host(value):
    return value.data_ if isinstance(value, DeviceArray) else value


_RECORDERS = []  # as gpubp.kernels.cuda_launch.recording: each fake launch, bound


@contextlib.contextmanager
def recording():
    launches = []
    _RECORDERS.append(launches)
    try:
        yield launches
    finally:
        _RECORDERS.pop()


def _launches(run):
    """A fake kernel function that a recording() block binds, as Kernel.bind does."""
    @functools.wraps(run)
    def launch(*args, **kwargs):
        op = functools.partial(_enqueue, functools.partial(run, *args, **kwargs))
        if _RECORDERS:
            _RECORDERS[-1].append(op)
        return op()
    return launch


class _Kernels(types.SimpleNamespace):
    """Stands in for :mod:`gpubp.kernels.cuda`: each kernel runs its reference twin."""

    def __getattr__(self, name):
        twin = getattr(reference, name)

        def launch(*args, stream=None, split=None, **kwargs):
            assert stream is not None and not isinstance(stream, int), "a stream object"
            LEDGER.launches += 1
            for arg in args:
                if isinstance(arg, np.ndarray) and arg.ndim:
                    raise TypeError(f"{name}: a host array given to a device kernel")
            return twin(*map(_host, args), **kwargs)
        return _launches(launch)


def _output_delta(a, y, activation, loss, delta, loss_param=0.0, *, sums, stream):
    assert stream is not None and not isinstance(stream, int), "a stream object"
    LEDGER.launches += 2
    w = None if sums.weights is None else _host(sums.weights)
    cost = reference.output_delta(_host(a), _host(y), activation, loss, _host(delta),
                                  loss_param, w)
    _host(sums.cost)[0] = cost
    _host(sums.total)[0] += cost * a.shape[0]
    if sums.correct is not None:  # the kernel counts the right rows in the same pass
        _host(sums.correct)[0] += reference.count_correct(_host(a), _host(y), loss)
    return sums.cost


def _bias_activation(z, b, activation, slope=reference.SLOPE, z_out=None, *, stream):
    assert stream is not None and not isinstance(stream, int), "a stream object"
    LEDGER.launches += 1
    z = _host(z)  # the elementwise activations get z flat
    kept = None if z_out is None else _host(z_out).reshape(-1, b.size)
    reference.bias_activation(z.reshape(-1, b.size), _host(b), activation, slope, kept)


_CORE_STREAMS = {}


def _core_stream(handle):
    """A stand-in for ``cuda.core.Stream.from_handle`` (which needs the driver)."""
    return _CORE_STREAMS.setdefault(handle, types.SimpleNamespace(handle=handle))


def private_kernels():
    """A stand-in for :mod:`gpubp.kernels.cuda_private`: its twins on the host storage."""
    from gpubp.kernels import reference_private  # the twins of the clipping kernels

    def clip_example_rows(inputs, deltas, max_grad_norm, total, flat, *, stream):
        assert stream is not None and not isinstance(stream, int), "a stream object"
        assert len(flat) == len(deltas) and total.shape == (deltas[0].shape[0],)
        LEDGER.launches += 2 * len(deltas)
        reference_private.clip_example_rows([_host(a) for a in inputs],
                                            [_host(d) for d in deltas], max_grad_norm,
                                            _host(total))

    return types.SimpleNamespace(clip_example_rows=clip_example_rows)


def kernels():
    """A stand-in for :mod:`gpubp.kernels.cuda` (built on the real launch arithmetic)."""
    from gpubp.kernels import cuda as real  # the launch arithmetic: pure Python

    return _Kernels(output_delta=_launches(_output_delta),
                    bias_activation=_launches(_bias_activation), CostSums=real.CostSums,
                    delta_blocks=real.delta_blocks, grad_splits=real.grad_splits,
                    stream_of_handle=_core_stream, recording=recording,
                    count_code=real.count_code)
