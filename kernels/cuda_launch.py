"""How the CUDA kernels are launched: :class:`Kernel`, and the streams it launches on.

A :class:`Kernel` is one kernel of one dtype with the one signature it is built for
(:func:`gpubp.kernels.cuda.kernels_for` and :func:`gpubp.kernels.cuda_dropout.kernels_for`
make them); :func:`stream_of_handle` turns a ``cudaStream_t`` handle (CuPy's current
stream) into the ``cuda.core`` stream a launch takes; :func:`compile_ptx` is the PTX of a
module's kernels (both modules'). The launch arithmetic (grids, blocks, workspaces)
stays with the kernels' host functions in :mod:`gpubp.kernels.cuda`.

:meth:`Kernel.bind` makes a launch once (stream normalised, arguments checked and packed,
:mod:`gpubp.kernels.cuda_packed`) and returns it as a zero-argument callable; inside
``with recording() as launches:`` every launch of every Kernel is also bound and appended
to ``launches``, so that a caller (the CUDA backend, per workspace) can replay a host
function's launches without running its launch arithmetic again.
"""

import contextlib
import functools

import numpy as np
from numba import config, cuda, types

from gpubp.kernels import cuda_packed

_RECORDERS = []  # the lists of recording() blocks in progress, innermost last


@contextlib.contextmanager
def recording():
    """``with recording() as launches:`` appends each launch made inside, bound
    (:meth:`Kernel.bind`), to the list ``launches``."""
    launches = []
    _RECORDERS.append(launches)
    try:
        yield launches
    finally:
        _RECORDERS.pop()


class Kernel:
    """One kernel of one dtype, launched with the single signature it is built for.

    ``kernel(grid, block, stream, *args)`` launches it. On a GPU the compiled kernel is
    looked up once (``dispatcher.compile``, which compiles or loads it) and launched with
    ``launch(args, grid, block, stream, 0)``: no typing of the arguments, no launch
    configuration object, no warning machinery per call. ``stream`` is a ``cuda.core``
    stream or anything with ``__cuda_stream__``; an int (``0``, the default of the
    functions below) is taken as a stream handle and wrapped once. Numba's per-call
    typing is replaced by a check of each array argument's dtype and dimensions against
    the signature (a mismatch would otherwise be reinterpreted silently): a TypeError.
    Under the simulator, which has no compiled kernels, it is the ordinary
    ``dispatcher[grid, block, stream](*args)``.

    Attributes
    ----------
    name : str
    dispatcher : numba CUDA dispatcher (``FakeCUDAKernel`` under the simulator)
    signature : numba signature, ``void(argtypes...)``
    """

    __slots__ = ("name", "dispatcher", "signature", "simulated", "_compiled", "_arrays")

    def __init__(self, name, dispatcher, signature, simulated=None):
        self.name = name
        self.dispatcher = dispatcher
        self.signature = signature
        self.simulated = bool(config.ENABLE_CUDASIM) if simulated is None else simulated
        self._compiled = None
        # (position, dtype, ndim) of each array argument, checked at every launch
        self._arrays = tuple((i, np.dtype(t.dtype.name), t.ndim)
                             for i, t in enumerate(signature.args)
                             if isinstance(t, types.Array))

    def __call__(self, grid, block, stream, *args):
        if _RECORDERS:
            launch = self.bind(grid, block, stream, *args)
            _RECORDERS[-1].append(launch)
            launch()
            return
        if self.simulated:
            self._simulate(grid, block, stream, args)
            return
        self._check(args)
        if isinstance(stream, int):
            stream = stream_of_handle(stream)
        self._kernel().launch(args, grid, block, stream, 0)

    def bind(self, grid, block, stream, *args):
        """This launch as a zero-argument callable, made once: the stream normalised,
        the arguments checked against the signature and packed
        (:func:`gpubp.kernels.cuda_packed.bind`). It holds ``args`` (so their memory)."""
        if self.simulated:
            launch = functools.partial(self._simulate, grid, block, stream, args)
            launch.packed, launch.keep = False, args
            return launch
        self._check(args)
        if isinstance(stream, int):
            stream = stream_of_handle(stream)
        return cuda_packed.bind(self._kernel(), args, grid, block, stream)

    def _simulate(self, grid, block, stream, args):
        self.dispatcher[grid, block, stream](*args)

    def _kernel(self):
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = self.dispatcher.compile(self.signature)
        return compiled

    def _check(self, args):
        """Numba's per-call typing, replaced: each array argument's dtype and ndim."""
        if len(args) != len(self.signature.args):
            raise TypeError(f"{self!r} takes {len(self.signature.args)} arguments, got "
                            f"{len(args)}")
        for i, dtype, ndim in self._arrays:
            arg = args[i]
            if getattr(arg, "dtype", None) != dtype or getattr(arg, "ndim", None) != ndim:
                raise TypeError(f"{self!r}: argument {i} must be a {ndim}-d {dtype} device "
                                f"array, got {type(arg).__name__} "
                                f"{getattr(arg, 'dtype', '')} {getattr(arg, 'shape', '')}")

    def __repr__(self):
        return f"<Kernel {self.name}({', '.join(map(str, self.signature.args))})>"


def compile_ptx(kernels_for, cc, dtypes=(np.float32, np.float64)):
    """PTX of every kernel that ``kernels_for(dtype)`` (name -> :class:`Kernel`) builds, for
    each of ``dtypes``, compiled for compute capability ``cc`` (needs Numba's NVVM, no GPU);
    returns ``"{kernel}_{dtype}"`` -> PTX text."""
    ptx = {}
    for dtype in dtypes:
        for name, kernel in kernels_for(dtype).items():
            text, _ = cuda.compile_ptx(kernel.dispatcher.py_func, kernel.signature,
                                       cc=tuple(cc))
            ptx[f"{name}_{np.dtype(dtype).name}"] = text
    return ptx


_STREAMS = {}


def stream_of_handle(handle):
    """The ``cuda.core`` stream of a ``cudaStream_t`` handle (0: the legacy default
    stream, CuPy's null stream), made once per handle; ``cuda.core``'s launch takes
    stream objects only."""
    stream = _STREAMS.get(handle)
    if stream is None:
        from cuda.core import Stream  # cuda-core, on a real GPU only (numba-cuda needs it)

        stream = _STREAMS[handle] = Stream.from_handle(handle)
    return stream
