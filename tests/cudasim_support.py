"""Set-up shared by the files that run under Numba's CUDA simulator (``tests/cudasim_*.py``).

Not a test module. :func:`prepare` is called at the top of each simulated file:

- A shorter GIL switch interval than the default 5 ms: the simulator runs each CUDA thread
  as a Python thread and its barrier polls them, so barriers (and the tests) get faster.
- A lock around the simulator's shared-memory allocation. ``FakeCUDAShared.array`` (numba-
  cuda 0.30) looks up the block's array for a source line and creates it if missing,
  without a lock: two threads of a block can both miss and each get its *own* "shared"
  array, so a reduction silently drops a thread's contribution. It happens rarely, more
  on a loaded machine, and showed here as a training run off by 3e-4. The replacement is
  the same lookup under a lock (and reads the caller's frame directly, which is faster
  than the original's ``traceback.extract_stack``). Real GPUs are not concerned.
"""

import sys
import threading

import numpy as np


def prepare():
    sys.setswitchinterval(1e-4)
    from numba.cuda.simulator import kernelapi

    if getattr(kernelapi.FakeCUDAShared.array, "gpubp_locked", False):
        return
    lock = threading.Lock()
    original = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # not used by gpubp's kernels
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    array.gpubp_locked = True
    kernelapi.FakeCUDAShared.array = array
