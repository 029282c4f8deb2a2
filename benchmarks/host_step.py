"""Host CPU µs per ``fit`` step of the CUDA backend with every device call stubbed out.

What it measures is gpubp's own Python per step (plus Numba's argument packing), the part
that decides a small network's speed on a GPU: the device does nothing here. CuPy is the
fake of ``tests/fake_cupy.py`` with its products, gathers and sums made no-ops, the kernels
are gpubp's real ones (launch arithmetic, :class:`~gpubp.kernels.cuda_launch.Kernel`),
each "compiled" into a stand-in that carries numba-cuda's own ``_Kernel.launch`` and
``_prepare_args`` (so the per-launch packing costs what it costs), and ``cuda.core.launch``
and ``Graph.launch`` do nothing. Run from a checkout's root (it works on older ones too,
which is how the "before" figures of docs/cuda.md were taken)::

    PYTHONPATH=. python benchmarks/host_step.py [--case 784-128-10@64] [--steps 200]

It prints one JSON line: µs per step and Python-level calls per step, eager (``cuda_graph=False``) and, where the checkout
has it, with the graph path (``cuda_graph=True``), the fastest of a few epochs, in this thread's CPU time (``time.thread_time``: a loaded
machine's waits are not counted).
"""

import argparse
import inspect
import json
import sys
import time
import types

import numpy as np
from numba.cuda import args as numba_args  # ArgHint: what _prepare_args passes through


def _stub_device(monkeypatch_items):
    """Install the fake CuPy, no-op device work and kernel stand-ins; returns the fake."""
    from tests import fake_cupy  # the checkout's fake CuPy (its arrays are host storage)

    xp = fake_cupy.module()
    for name in ("matmul", "take", "copyto"):
        setattr(xp, name, lambda *a, out=None, **k: out)
    xp.sum = lambda a, axis=None, out=None, **k: out if out is not None else a
    xp.argmax = lambda a, axis=None: a
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = lambda shape, dtype=np.float64: np.empty(shape, dtype)
    sys.modules.update({"cupy": xp, "cupyx": cupyx})
    # CuPy's ``a.data.ptr`` is an attribute read (~0.1 µs); the fake's ``ctypes`` is ~10 µs
    fake_cupy.DeviceArray.data = property(
        lambda self: fake_cupy._Memory(self.data_.__array_interface__["data"][0]))
    if hasattr(fake_cupy, "_Graph"):
        fake_cupy._Graph.launch = lambda self, stream=None: None  # the device replays it
    return fake_cupy


class _View(numba_args.ArgHint):
    """A Numba device view as numba-cuda 0.30's ``_prepare_args`` reads one."""

    def __init__(self, array, shape=None):
        super().__init__(self)
        self.shape = tuple(array.shape if shape is None else shape)
        self.dtype, self.ndim = array.dtype, len(self.shape)
        self.size, self.ptr = int(np.prod(self.shape)), array.data.ptr
        self._array = array
        strides = tuple(int(s) for s in np.empty(self.shape, self.dtype).strides)
        self._layout = types.SimpleNamespace(strides_in_bytes=strides, is_contiguous_c=True,
                                             is_contiguous_f=self.ndim == 1)

    def to_device(self, retr, stream=0):
        return self

    def reshape(self, *shape):
        return _View(self._array, shape[0] if isinstance(shape[0], tuple) else shape)


def _stub_kernels():
    from numba.cuda import dispatcher  # numba's own launch path

    from gpubp.kernels import cuda as K
    from gpubp.kernels import cuda_launch

    dispatcher.launch = lambda *a: None  # cuda.core.launch: the driver call
    stream = types.SimpleNamespace(handle=0)
    cuda_launch.stream_of_handle = K.stream_of_handle = lambda handle: stream
    import numba.cuda

    numba.cuda.device_array = lambda n, dtype: _View(types.SimpleNamespace(
        shape=(n,), dtype=np.dtype(dtype), data=types.SimpleNamespace(ptr=1)))

    class Compiled:
        launch = dispatcher._Kernel.launch
        _prepare_args = dispatcher._Kernel._prepare_args
        debug = cooperative = False
        extensions = ()

        def __init__(self, argument_types):
            self.argument_types = argument_types
            cufunc = types.SimpleNamespace(kernel=object())
            self._codelibrary = types.SimpleNamespace(get_cufunc=lambda: cufunc)

    modules = [K]
    try:
        from gpubp.kernels import cuda_gather  # this checkout's graph-step kernels

        modules.append(cuda_gather)
    except ImportError:
        pass
    for module in modules:
        for dtype in (np.float32, np.float64):
            for kernel in module.kernels_for(dtype).values():
                kernel.simulated = False
                kernel._compiled = Compiled(kernel.signature.args)


def _net(sizes):
    import gpubp
    from gpubp.backends import cuda as cuda_backend
    from gpubp.backends import cuda_probe

    for module in (cuda_backend, cuda_probe):
        module.simulated = lambda: False
    cuda_backend.probe = lambda: (True, "stubbed")
    cuda_backend.CudaBackend._wrap = lambda self, array: _View(array)
    return gpubp.Network(list(sizes), hidden="relu", output="softmax", loss="cross_entropy",
                         device="cuda", seed=0, fallback=False)


def measure(case="784-128-10@64", steps=200, epochs=5):
    """``{"eager": µs, "graph": µs or None, "eager calls": n, ...}`` per step (the calls
    counted in a last, profiled epoch, not timed)."""
    sizes, batch = case.split("@")
    sizes, batch = [int(n) for n in sizes.split("-")], int(batch)
    fake = _stub_device(None)
    _stub_kernels()
    from gpubp.training.callbacks import Callback  # the checkout's, as fit calls it

    rng = np.random.default_rng(0)
    X = fake.DeviceArray(rng.normal(size=(batch * steps, sizes[0])).astype(np.float32))
    Y = fake.DeviceArray(np.eye(sizes[-1], dtype=np.float32)[
        rng.integers(0, sizes[-1], batch * steps)])

    class Timer(Callback):
        """Each epoch's CPU seconds, and on the last its Python and C calls (a count a
        loaded machine does not disturb)."""

        def on_epoch_begin(self, run, epoch):
            if epoch == epochs - 1:
                self.calls = [0]
                sys.setprofile(lambda frame, event, arg: event in ("call", "c_call") and
                               self.calls.__setitem__(0, self.calls[0] + 1))
            self.t0 = time.thread_time()

        def on_epoch_end(self, run, epoch, logs):
            self.seconds.append(time.thread_time() - self.t0)
            sys.setprofile(None)

    net = _net(sizes)
    has_graphs = "cuda_graph" in inspect.signature(net.fit).parameters
    out = {}
    for label, mode in (("eager", False), ("graph", True)):
        if mode and not has_graphs:
            out[label] = out[f"{label} calls"] = None
            continue
        timer = Timer()
        timer.seconds = []
        extra = {"cuda_graph": mode} if has_graphs else {}
        net.fit(X, Y, epochs=epochs, batch_size=batch, shuffle=False, verbose=0, lr=0.05,
                callbacks=[timer], **extra)
        out[label] = round(min(timer.seconds[1:-1]) / steps * 1e6, 1)
        out[f"{label} calls"] = round(timer.calls[0] / steps, 1)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="784-128-10@64")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    print(json.dumps({"case": args.case, "host_us_per_step": measure(args.case, args.steps)}))


if __name__ == "__main__":
    main()
