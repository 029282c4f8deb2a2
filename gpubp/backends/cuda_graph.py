"""A whole training step captured once as a CUDA graph and replayed every step after.

:class:`StepGraphs` runs an epoch's steps on a non-blocking stream of its own. Per batch
shape (and learning rate: the key the caller gives) the first step runs eagerly (it
allocates what the step needs and binds its launches), the second is captured with CuPy's
``Stream.begin_capture()`` / ``end_capture()`` and every later one is one
``Graph.launch(stream)``. A graph replays the same launches with the same arguments, so
the batch is not a slice of the order: the epoch's order is copied into one fixed device
buffer, and the batch's start is an int64 counter on the device, read by the gather
kernels and advanced by a kernel at the end of the step (:mod:`gpubp.kernels.cuda_gather`).
One graph therefore serves every full batch of every epoch; the short last batch has its
own.

``mode="auto"``: the first captured graph of the process is checked once: the step is run
eagerly, its results (θ, the optimizer's state, the cost and accuracy sums, the counter)
kept, the state restored and the graph replayed; if any differs in a single bit the
graphs are switched off for the process with a RuntimeWarning and the eager result stands.
``mode=True`` skips the check. Under the simulator (no graphs) and when ``capture`` is
False, the steps run eagerly through the same counter-indexed gathers.
"""

import contextlib
import warnings

import numpy as np

MODES = ("auto", True, False)
VERIFIED = {"graph": None}  # the process's check: None (not yet), True, False


class OffsetIndex:
    """The rows ``order[offset[0]:offset[0] + P]`` of a step, the start on the device.

    ``len()`` is ``P``; :meth:`gpubp.backends.cuda_rows.CudaRows.gather_rows` gathers with
    it through :func:`gpubp.kernels.cuda_gather.gather_rows`.
    """

    __slots__ = ("order", "offset", "P")

    def __init__(self, order, offset, P):
        self.order, self.offset, self.P = order, offset, P

    def __len__(self):
        return self.P


class StepGraphs:
    """The captured steps of one ``fit`` (see the module docstring).

    Parameters
    ----------
    backend : CudaBackend
    mode : {"auto", True}
    dtype : numpy dtype of the rows (picks the gather kernels)

    Attributes
    ----------
    graphs : dict
        Key -> captured graph.
    counts : dict
        ``"eager"``, ``"captured"``, ``"replayed"`` steps so far.
    """

    def __init__(self, backend, mode, dtype):
        if mode not in ("auto", True):
            raise ValueError(f"mode must be 'auto' or True, got {mode!r}")
        self.backend, self.mode, self.dtype = backend, mode, np.dtype(dtype)
        xp = backend.xp
        self.capture = not backend.simulated
        self.stream = xp.cuda.Stream(non_blocking=True) if self.capture else None
        self.offset = xp.zeros(1, dtype=np.int64)
        self.order = None
        self.graphs, self._warm = {}, set()
        self._held = {}  # id -> the workspaces a graph was captured on, kept alive
        self.counts = {"eager": 0, "captured": 0, "replayed": 0}

    @contextlib.contextmanager
    def epoch(self, order):
        """The epoch's steps run inside: on :attr:`stream`, after the work queued so far
        on the current stream, which waits for them at the end (events, no host wait)."""
        xp = self.backend.xp
        if not self.capture:
            self._load_order(order)
            yield
            return
        outer = xp.cuda.get_current_stream()
        ready = xp.cuda.Event(disable_timing=True)
        ready.record(outer)
        self.stream.wait_event(ready)
        with self.stream:
            self._load_order(order)
            yield
        done = xp.cuda.Event(disable_timing=True)
        done.record(self.stream)
        outer.wait_event(done)

    def _load_order(self, order):
        """The epoch's order into the fixed buffer the graphs read; the counter to 0."""
        xp = self.backend.xp
        order = xp.asarray(order) if self.backend.simulated else order
        if self.order is None or self.order.shape != order.shape:
            self.order = xp.empty(order.shape, dtype=np.int64)
            self.graphs.clear()  # they read the old buffer
            self._warm.clear()
        self.order[...] = order  # a device copy (an int64 cast where needed)
        self.offset.fill(0)

    def hold(self, workspaces):
        """A key part for the step's ``workspaces`` (a tuple of arrays): their identity,
        and they are kept alive, so that a graph captured on them never writes to freed
        memory, and a network whose workspaces grew (a larger validation chunk, say)
        captures anew instead of replaying onto the old ones."""
        token = id(workspaces[0])
        if self._held.get(token, (None,))[0] is not workspaces[0]:
            self._held[token] = workspaces
        return token

    def step(self, key, P, run, optimizer, state):
        """One step of ``P`` rows: ``run(index)`` eagerly, or its graph replayed.

        ``key``: what fixes the step's launches (the batch size, the learning rate, the
        workspaces' :meth:`hold` token); ``optimizer``: its ``iterations`` advance as an eager step's
        would; ``state()``: the device arrays the step changes (for the check).
        """
        index = OffsetIndex(self.order, self.offset, P)

        def eager():
            run(index)
            self.backend.kernels.advance(self.backend._nb(self.offset), P, self.dtype,
                                         stream=self.backend._stream())

        graph = self.graphs.get(key)
        if graph is None and (key in self._warm and self.capture and VERIFIED["graph"]
                              is not False):
            graph = self.graphs[key] = self._capture(eager, optimizer)
            if self.mode == "auto" and VERIFIED["graph"] is None:
                self._check(graph, eager, optimizer, state())
                return
        if graph is None:
            self._warm.add(key)
            eager()
            self.counts["eager"] += 1
            return
        graph.launch(stream=self.stream)
        optimizer.iterations += 1  # what the captured optimizer.step did on the host
        self.counts["replayed"] += 1

    def _capture(self, eager, optimizer):
        """The step as a graph (captured, not run: the host-side counters are restored)."""
        iterations = optimizer.iterations
        self.stream.begin_capture()
        try:
            eager()
        finally:
            graph = self.stream.end_capture()
            optimizer.iterations = iterations
        self.counts["captured"] += 1
        return graph

    def _check(self, graph, eager, optimizer, arrays):
        """Run the step eagerly and by the graph from the same state; keep the graph only
        if both give the same bits (one host read, once per process)."""
        xp = self.backend.xp
        before = [a.copy() for a in arrays]
        iterations = optimizer.iterations
        eager()
        want = [a.copy() for a in arrays]
        for a, saved in zip(arrays, before):
            a[...] = saved
        graph.launch(stream=self.stream)
        optimizer.iterations = iterations + 1
        differ = [i for i, (a, w) in enumerate(zip(arrays, want))
                  if not bool(xp.array_equal(a.view(np.uint8), w.view(np.uint8)))]
        VERIFIED["graph"] = not differ
        self.counts["replayed" if not differ else "eager"] += 1
        if differ:
            for a, w in zip(arrays, want):
                a[...] = w  # the eager step's result stands
            self.graphs.clear()
            warnings.warn(f"cuda_graph='auto': a replayed CUDA graph of the training step "
                          f"differs from the eager step (in {len(differ)} of its "
                          f"{len(arrays)} state arrays); training on with eager steps for "
                          f"the rest of this process", RuntimeWarning, stacklevel=4)
