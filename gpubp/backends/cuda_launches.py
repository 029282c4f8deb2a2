"""Each kernel call of a training step made once per workspace, then replayed.

:class:`BoundLaunches` is the part of :class:`gpubp.backends.cuda.CudaBackend` that keeps
the launches of each kernel call bound (:meth:`gpubp.kernels.cuda_launch.Kernel.bind`:
arguments checked and packed once) under a key of the call, and replays them on every
later step with the same key, skipping the launch arithmetic, the view lookups and the
argument packing. It uses the backend's ``simulated``, ``xp``, ``kernels``, ``counts`` and
its ``_launches`` dictionary (made in ``CudaBackend.__init__``, dropped with the views).
"""

MAX_LAUNCHES = 512  # cached keys; more means arrays come and go, not a training loop


class BoundLaunches:
    """The cache of bound launches of the CUDA backend."""

    def _launch(self, name, arrays, scalars, run):
        """Run a kernel call, ``run()``, or replay its launches bound the first time.

        The key is ``name``, the current stream, the ``scalars`` (every non-array argument
        the launches depend on) and each array's pointer, shape and strides: the same key
        means the same launches with the same arguments. A bound launch holds its views,
        so a cached pointer cannot be reused by another array; the cache is dropped with
        the views' (``CudaBackend.empty``).
        """
        if self.simulated:
            arrays = tuple((a.ctypes.data, a.shape, a.strides) for a in arrays)
            stream = 0
        else:
            arrays = tuple((a.data.ptr, a.shape, a.strides) for a in arrays)
            stream = self.xp.cuda.get_current_stream().ptr
        key = (name, stream, scalars, arrays)
        launches = self._launches.get(key)
        if launches is not None:
            for launch in launches:
                launch()
            return
        if len(self._launches) >= MAX_LAUNCHES:
            self._launches.clear()
        with self.kernels.recording() as launches:
            run()
        self._launches[key] = launches
        self.counts["bound"] += len(launches)
