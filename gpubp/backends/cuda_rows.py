"""Where the CUDA backend's training rows come from: resident on the device, or staged.

:class:`CudaRows` is the part of :class:`gpubp.backends.cuda.CudaBackend` that moves
training data: ``X`` and ``Y`` uploaded once per ``fit`` when they fit in device memory
(:meth:`~CudaRows.resident`), each batch then gathered on the device; otherwise rows
gathered on the host into pinned, double-buffered staging and uploaded asynchronously.
It uses the backend's ``xp``, ``simulated``, ``to_device``, ``to_host``, ``copyto`` and
its ``_resident`` and ``_staging`` dictionaries (made in ``CudaBackend.__init__``).
"""

import numpy as np

from gpubp.backends.cuda_graph import OffsetIndex
from gpubp.data import mapped

RESIDENT_FRACTION = 0.5  # of the free device memory that resident training data may take


class CudaRows:
    """The resident-data, row-gathering and pinned-staging methods of the CUDA backend."""

    def _is_resident(self, array):
        if self.simulated:  # NumPy stands for device memory: track what was uploaded
            base = getattr(array, "base", None)  # None for a SciPy matrix
            owner = array if base is None else base
            return self._resident.get(id(owner)) is owner
        return isinstance(array, self.xp.ndarray)

    def in_place(self, given, checked):
        """``given`` itself when it is a CuPy array of the checked dtype and shape,
        C-contiguous (trained on in place: no host round trip); else ``checked``."""
        if (not self.simulated and isinstance(given, self.xp.ndarray)
                and given.dtype == checked.dtype and given.shape == checked.shape
                and given.flags.c_contiguous):
            return given
        return checked

    def batch_order(self, order, sources):
        """The order on the device (uploaded here, once per epoch) when every source is
        resident, so that a step gathers its rows with no transfer; else the host order
        itself: host rows are gathered on the host, and a device index there would be
        read back at every step."""
        if all(src is None or self._is_resident(src) for src in sources):
            return self.resident(order)
        return order

    def _free_bytes(self):
        if self.simulated:
            return 2**40
        return self.xp.cuda.Device().mem_info[0]

    def resident(self, array):
        """``array`` on the device, uploaded once, if it fits; else ``array`` itself.

        ``fit`` calls it for ``X`` and ``Y`` once per run and for the shuffled order once
        per epoch, so that a step gathers its batch on the device (:meth:`gather_rows`)
        with no transfer. Data larger than RESIDENT_FRACTION of the free device memory
        stays on the host and is staged batch by batch instead, and so does a memory-mapped
        file (never read whole).
        """
        if (self._is_resident(array) or mapped.is_mapped(array)
                or array.nbytes > RESIDENT_FRACTION * self._free_bytes()):
            return array
        device = self.to_device(np.ascontiguousarray(array))
        self._resident[id(device)] = device
        return device

    def gather_rows(self, src, index, out, staging):
        """``out[:] = src[index]`` (all of ``src`` when ``index`` is None).

        Resident ``src``: one gather on the device (``take``; the gather kernel for the
        :class:`~gpubp.backends.cuda_graph.OffsetIndex` of a graph's step), no transfer. Host ``src``:
        gathered on the host into pinned staging, then one asynchronous upload.
        """
        if self._is_resident(src):
            if index is None:
                self.copyto(out, src)
            elif isinstance(index, OffsetIndex):  # a graph's step: the start on the device
                self._launch("gather_rows", (src, index.order, index.offset, out), (),
                             lambda: self.kernels.gather_rows(
                                 self._nb(src), self._nb(index.order), self._nb(index.offset),
                                 self._nb(out), stream=self._stream()))
            else:
                if not self._is_resident(index):
                    index = self.to_device(np.asarray(index))
                self.xp.take(src, index, axis=0, out=out)
            return out
        if index is not None and not isinstance(index, np.ndarray):
            index = self.to_host(index)  # not from fit (see batch_order): one read, counted
        pinned = self._pinned(out.shape, out.dtype)
        if index is None:
            np.copyto(pinned, src)
        else:  # a memory-mapped file's rows are read, not mapped
            mapped.take(src, index, out=pinned)
        self.to_device(pinned, out=out)
        self._uploaded(pinned)
        return out

    def _pinned(self, shape, dtype):
        """The next of two page-locked host buffers of this shape; waits until its last
        upload has finished (so that the host never overwrites rows still in flight)."""
        key = (shape, np.dtype(dtype))
        slot = self._staging.get(key)
        if slot is None:
            slot = self._staging[key] = [[self._pinned_empty(shape, dtype) for _ in range(2)],
                                         [None, None], 0]
        buffers, events, i = slot
        if events[i] is not None:
            events[i].synchronize()
        return buffers[i]

    def _pinned_empty(self, shape, dtype):
        if self.simulated:
            return np.empty(shape, dtype)
        import cupyx  # optional: CuPy

        return cupyx.empty_pinned(shape, dtype=dtype)

    def _uploaded(self, pinned):
        """Record the upload from ``pinned`` just queued; the other buffer is next."""
        slot = self._staging[(pinned.shape, pinned.dtype)]
        i = slot[2]
        if not self.simulated:
            event = slot[1][i] or self.xp.cuda.Event(block=False, disable_timing=True)
            event.record()
            slot[1][i] = event
        slot[2] = 1 - i
