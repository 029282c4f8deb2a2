"""Launches bound once (``gpubp.kernels.cuda_packed``) and the graph step's gather kernels.

numba-cuda's own ``_Kernel.launch`` packs the arguments on every call; ``cuda_packed.bind``
packs them once with the same private ``_prepare_args``. Without a GPU the compiled kernel
is a stand-in that carries numba's real ``launch`` and ``_prepare_args`` (the argument
packing is pure Python; only ``cuda.core.launch`` needs a device, and it is replaced by a
recorder), so the test compares what both paths would hand to the driver.
"""

import ctypes
import types

import numpy as np
import pytest

from gpubp.kernels import cuda_gather, cuda_packed
from gpubp.kernels.cuda_launch import Kernel, recording

dispatcher = pytest.importorskip("numba.cuda.dispatcher")
if not hasattr(dispatcher, "_Kernel"):  # the simulator's numba.cuda has no compiled kernels
    pytest.skip("needs numba-cuda's compiled-kernel module (not the simulator)",
                allow_module_level=True)
from numba.cuda import args as numba_args  # noqa: E402 - after the skip above
from numba.cuda import types as nt  # noqa: E402


class DeviceView(numba_args.ArgHint):
    """What ``_prepare_args`` reads of a device array (pointer, shape, strides, layout)."""

    def __init__(self, ptr, shape, dtype):
        super().__init__(self)
        self.ptr, self.shape, self.dtype = ptr, shape, np.dtype(dtype)
        self.ndim, self.size = len(shape), int(np.prod(shape))
        strides = tuple(int(s) for s in np.empty(shape, dtype).strides)
        # cuda.core's StridedMemoryView layout, as numba-cuda 0.30 reads it
        self._layout = types.SimpleNamespace(strides_in_bytes=strides, is_contiguous_c=True,
                                             is_contiguous_f=len(shape) == 1)

    def to_device(self, retr, stream=0):
        return self  # already on the device: no copy, nothing to write back


class Compiled:
    """A compiled kernel without a GPU: numba's own launch and argument packing."""

    launch = dispatcher._Kernel.launch
    _prepare_args = dispatcher._Kernel._prepare_args
    debug = cooperative = False
    extensions = ()

    def __init__(self, argument_types):
        self.argument_types = argument_types
        cufunc = types.SimpleNamespace(kernel=object())
        self._codelibrary = types.SimpleNamespace(get_cufunc=lambda: cufunc)


SIGNATURE = nt.void(nt.float32[:, ::1], nt.float32[::1], nt.int64, nt.float32, nt.boolean)


def _args():
    return (DeviceView(4096, (37, 5), np.float32), DeviceView(8192, (5,), np.float32), 7,
            np.float32(0.25), True)


def _plain(value):
    """A packed argument as a comparable value (ctypes objects compare by identity)."""
    if isinstance(value, ctypes._SimpleCData):
        return (type(value).__name__, value.value)
    return value


@pytest.fixture
def driver_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(dispatcher, "launch", lambda *a: calls.append(a))
    return calls


def _same_launch(a, b):
    (stream_a, config_a, kernel_a, *args_a), (stream_b, config_b, kernel_b, *args_b) = a, b
    assert stream_a is stream_b and kernel_a is kernel_b
    assert repr(config_a) == repr(config_b)
    assert [_plain(v) for v in args_a] == [_plain(v) for v in args_b]


def test_packed_once_equals_numbas_launch(driver_calls):
    compiled, args, stream = Compiled(SIGNATURE.args), _args(), object()
    compiled.launch(args, (3, 1), 128, stream, 0)  # numba: packs on this call
    bound = cuda_packed.bind(compiled, args, (3, 1), 128, stream, private=True)
    assert bound.packed and bound.keep == args  # the arrays are held alive
    bound()
    bound()
    assert len(driver_calls) == 3
    _same_launch(driver_calls[0], driver_calls[1])
    _same_launch(driver_calls[0], driver_calls[2])
    # 2-d array: meminfo, parent, size, itemsize, pointer, 2 shapes, 2 strides
    assert [_plain(v) for v in driver_calls[0][3:12]] == [0, 0, 185, 4, 4096, 37, 5, 20, 4]


def test_other_versions_take_the_public_launch(driver_calls):
    assert cuda_packed.private_api_usable((0, 30))
    assert not cuda_packed.private_api_usable((0, 31))
    assert not cuda_packed.private_api_usable(None) or cuda_packed.numba_cuda_version()
    compiled, args, stream = Compiled(SIGNATURE.args), _args(), object()
    bound = cuda_packed.bind(compiled, args, 4, 256, stream, private=False)
    assert not bound.packed
    bound()  # compiled.launch itself: numba packs per call
    compiled.launch(args, 4, 256, stream, 0)
    _same_launch(driver_calls[0], driver_calls[1])
    # a numba-cuda whose kernel lacks what the private path reads: the public path
    broken = Compiled(SIGNATURE.args)
    broken._codelibrary = None
    assert not cuda_packed.bind(broken, args, 4, 256, stream, private=True).packed
    debug = Compiled(SIGNATURE.args)
    debug.debug = True  # its launch reads an error code back: never packed
    assert not cuda_packed.bind(debug, args, 4, 256, stream, private=True).packed


def test_kernel_bind_checks_once_and_records(driver_calls, monkeypatch):
    compiled = Compiled(SIGNATURE.args)
    made = []
    fake_dispatcher = types.SimpleNamespace(compile=lambda sig: made.append(sig) or compiled)
    kernel = Kernel("k", fake_dispatcher, SIGNATURE, simulated=False)
    monkeypatch.setattr(cuda_packed, "private_api_usable", lambda version=None: True)
    args, stream = _args(), types.SimpleNamespace(handle=5)
    with pytest.raises(TypeError, match="argument 0 must be a 2-d float32"):
        kernel.bind(3, 128, stream, DeviceView(0, (5,), np.float32), *args[1:])
    with recording() as launches:
        kernel(3, 128, stream, *args)  # launched, and recorded bound
    assert len(launches) == 1 and launches[0].packed and len(driver_calls) == 1
    launches[0]()
    _same_launch(driver_calls[0], driver_calls[1])
    assert made == [SIGNATURE]  # compiled (looked up) once
    kernel(3, 128, stream, *args)  # outside recording(): launched, not recorded
    assert len(launches) == 1


# -- the gather kernels of a graph step: PTX --------------------------------------------


@pytest.mark.parametrize("cc", [(7, 0), (8, 0), (9, 0)], ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_kernels_compile_to_ptx(cc, dtype, tmp_path):
    from numba import cuda
    from numba.cuda.cudadrv.error import CCSupportError

    from tests.test_cuda_kernels import PTXAS, _ptxas

    for name, kernel in cuda_gather.kernels_for(dtype).items():
        try:
            text, _ = cuda.compile_ptx(kernel.dispatcher.py_func, kernel.signature, cc=cc)
        except CCSupportError as exc:
            pytest.skip(f"this CUDA toolkit's NVVM cannot target sm_{cc[0]}{cc[1]}: {exc}")
        assert f".target sm_{cc[0]}{cc[1]}" in text and ".entry" in text
        if np.dtype(dtype) == np.float32:
            assert ".f64" not in text, name  # a float32 gather moves float32 only
        if PTXAS is not None:
            report = _ptxas(text, cc, tmp_path / f"{name}.ptx")
            assert "0 bytes stack frame" in report and "spill" not in report.replace(
                "0 bytes spill", ""), report
