"""Data-parallel training over MPI: every rank holds the whole network and a share of each batch.

The batch gradient is a sum over its P examples (``docs/design.md`` §1)::
    ∇C = (1/P) Σ_p ∇c_p = Σ_r (1/P) Σ_{p ∈ share of rank r} ∇c_p

so when every rank backpropagates its share of the global batch with ``δ^L`` carrying
``1/P`` (the *global* row count, not its own), one allreduce (a sum) of the ranks'
gradients hands every rank the single-process gradient, up to the order of the additions.
Every rank then takes the same optimizer step, and the parameters stay identical without
ever being sent again. What :func:`gpubp.training.loop.fit` does with a :class:`Group`:

- **start**: a check gathers what every rank was given (layer sizes, dtype, data shapes
  and a sample of rows, seed, optimizer, batch size, ...) and turns a difference, or an
  exception on any rank, into the same exception on every rank; then the parameters and
  the generator state of rank 0 are broadcast (Horovod's ``broadcast_parameters``);
- **each step**: all ranks draw the same permutation; rank ``r`` of ``R`` takes rows
  ``[r B / R, (r+1) B / R)`` of every global batch of ``B`` rows (possibly none) and gives
  the step a reduction chosen by name (:mod:`gpubp.distributed.reductions`; one process
  uses the identity of :mod:`gpubp.core.reduction`): by default the ranks of a machine
  split each batch over shared memory (``"shared"``), and messages (``"iallreduce"``: each
  layer's gradient leaves in a non-blocking allreduce as soon as backprop has produced it
  and is waited for just before the update, DDP's buckets) join machines;
- **each epoch**: the figures (loss, accuracy, validation, gradient norm) are sums over the
  ranks, so History, early stopping, ``tol`` and divergence are decided identically
  everywhere; checkpoints are written by rank 0 alone;
- **faults**: after the start, an exception on one rank prints its traceback and aborts the
  whole job (``MPI_Abort``): no rank is left waiting in a collective.

On CUDA with CuPy, gradients are summed on the device through NCCL (``cupy.cuda.nccl``,
its unique id broadcast over MPI), enqueued on the current stream behind the kernels that
produce them, with no host round trip. Under the Numba simulator the arrays live on the
host and the MPI path runs.
"""

import contextlib
import sys
import time
import traceback
import warnings
import zlib

import numpy as np

from gpubp.core.diagnostics import Alone
from gpubp.core.reduction import Identity
from gpubp.errors import TrainingDiverged
from gpubp.data import mapped
from gpubp.data.inputs import is_sparse
from gpubp.distributed.mpi import MPI_HINT, import_mpi, is_root, rank, size, world  # noqa: F401
from gpubp.distributed.watchdog import Watchdog
from gpubp.distributed import reductions
from gpubp.distributed.reductions import check_name

ABORT_GRACE = 0.25  # seconds between a failed rank's traceback and its MPI_Abort


def group(distributed):
    """The :class:`Local` or :class:`Group` that ``fit(distributed=...)`` asks for.

    Parameters
    ----------
    distributed : bool, mpi4py communicator, Group or None
        False/None: one process. True: ``MPI.COMM_WORLD``. A communicator: its ranks.
        A :class:`Group` (e.g. ``Group(comm, reduction="allreduce")``): itself.
    """
    if distributed is None or distributed is False:
        return LOCAL
    if isinstance(distributed, Local):
        return distributed
    if distributed is True:
        distributed = world()
    if all(hasattr(distributed, m) for m in ("Get_rank", "Get_size", "Iallreduce")):
        # one rank has nothing to sum: the single-process path (and its compiled epoch)
        return Group(distributed) if distributed.Get_size() > 1 else LOCAL
    raise TypeError(f"distributed must be a bool or an mpi4py communicator, got "
                    f"{type(distributed).__name__}")


class Local(Alone):
    """One process: every rank-wide operation is the identity, nothing is sent.

    ``rows(n)`` (the slice of ``n`` rows this rank processes) and ``sum(values)`` (the
    element-wise sum over the ranks of a small vector) come from :class:`Alone`.
    """

    rank = 0
    size = 1
    is_root = True
    comm = None

    def all(self, flag):
        """Whether ``flag`` holds on every rank."""
        return bool(flag)

    def reduction_for(self, net, optimizer=None, split=False):
        """The reduction (:mod:`gpubp.core.reduction`) the training steps of ``net`` use in
        this run: the identity, the sum over one process.

        ``split``: whether the run's batches could be split over the ranks of a machine
        (:mod:`gpubp.distributed.split_step`; dense in-memory data on the compiled CPU path)."""
        return Identity(net)

    @contextlib.contextmanager
    def start(self, net, facts):
        """Run the set-up of ``fit`` inside; ``facts`` (a dict) is filled by the caller."""
        yield

    @contextlib.contextmanager
    def faults(self):
        """Run the training loop inside: an exception on one rank ends every rank."""
        yield

    def check_identical(self, net):
        """Raise unless every rank holds the same parameters."""

    def restore(self, net, snapshot):
        """Put ``snapshot`` (a flat copy of ``theta``) back into the parameters."""
        net.backend.copyto(net.theta, snapshot)

    def comm_seconds(self):
        """Seconds this rank has spent sending and waiting for gradient sums."""
        return 0.0


LOCAL = Local()


class Group(Local):
    """The ranks of an mpi4py communicator training one network together.

    Parameters
    ----------
    comm : mpi4py communicator
    reduction : str or None
        How the ranks combine their gradients, by name
        (:data:`~gpubp.distributed.reductions.REDUCTIONS`): ``"shared"``, ``"slice-sums"``,
        ``"iallreduce"``, ``"allreduce"`` or ``"nccl"`` (see
        :mod:`gpubp.distributed.reductions`). None (default): ``"nccl"`` for CuPy device
        arrays, ``"shared"`` for host arrays.
    node : mpi4py communicator, optional
        The ranks sharing memory with this one (default: MPI's ``COMM_TYPE_SHARED``
        split of ``comm``); the tests pass smaller groups to stand in for machines.
    """

    def __init__(self, comm, reduction=None, *, node=None):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        self.reduction = None if reduction is None else check_name(reduction)
        self.node = node
        self._reductions = {}  # id(net) -> its Reduction, made once per network and run
        self._seconds_closed = 0.0  # comm_seconds of the reductions of runs that have ended
        self._nccl = None

    def __repr__(self):
        return f"<gpubp.distributed.ranks.Group rank {self.rank} of {self.size}>"

    def rows(self, n):
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def sum(self, values):
        MPI = import_mpi()
        out = np.array(values, dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, out, op=MPI.SUM)
        return out

    def all(self, flag):
        return bool(self.comm.allreduce(bool(flag), op=import_mpi().LAND))

    def reduction_for(self, net, optimizer=None, split=False):
        """The reduction named by ``reduction`` (or the default for ``net``'s arrays), made
        once per network and run (collectively: every rank asks alike)."""

        known = self._reductions.get(id(net))
        if getattr(known, "net", None) is net:
            return known
        name = self.reduction
        if name is None:
            name = "nccl" if reductions.on_device(net) else "shared"
        why = reductions.nccl_unusable(self.comm) if name == "nccl" and \
            reductions.on_device(net) else None
        if why is not None:
            warnings.warn(f"reduction 'nccl' cannot run ({why}); the gradients are summed "
                          f"through the host with MPI instead (a copy each way per step)",
                          RuntimeWarning, stacklevel=2)
            made = self._reductions[id(net)] = reductions.HostStagedGradientSum(net, self.comm)
            return made
        made = reductions.create_reduction(
            name, net, self.comm, optimizer=optimizer, node=self.node, split=split,
            nccl_comm=self._nccl_comm() if name == "nccl" else None)
        self._reductions[id(net)] = made
        return made

    def restore(self, net, snapshot):
        """Put ``snapshot`` back, on every rank together (collective): the run's reductions
        are closed first, so that parameters a node shared are each rank's own again and no
        two ranks write the same memory."""
        self.close()
        net.backend.copyto(net.theta, snapshot)

    def close(self):
        """End the run's reductions (collective: their shared memory is freed)."""
        self._seconds_closed += sum(made.seconds for made in self._reductions.values())
        for made in self._reductions.values():
            made.close()
        self._reductions.clear()

    def comm_seconds(self):
        return self._seconds_closed + sum(r.seconds for r in self._reductions.values())

    def _nccl_comm(self):
        """One NCCL communicator over the same ranks, its unique id sent from rank 0."""
        if self._nccl is None:
            from cupy.cuda import nccl  # optional: CuPy's NCCL, on GPUs only

            uid = nccl.get_unique_id() if self.is_root else None
            uid = self.comm.bcast(uid, root=0)
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        return self._nccl

    # -- start ------------------------------------------------------------------------
    @contextlib.contextmanager
    def start(self, net, facts):
        """Gather every rank's set-up outcome: raise the same error everywhere, or agree.

        The body (``fit``'s checks and preparation) runs on every rank; whatever happens,
        every rank then takes part in one ``allgather`` of (its facts, its error). An error
        on any rank, or facts that differ from rank 0's, raises on every rank, before any
        collective of the training loop. Rank 0's generator state is broadcast before the
        body; on success its parameters are too.
        """
        self._watchdog = Watchdog(self.comm)
        # the generator first: the set-up draws from it (the validation split), and with
        # seed=None each rank's own would differ
        net.rng.bit_generator.state = self.comm.bcast(net.rng.bit_generator.state, root=0)
        error = None
        try:
            yield
        except Exception as exc:  # every kind: it is re-raised below, on every rank
            error = exc
        if error is None:
            mine = (dict(facts), None)
        else:
            mine = (None, f"{type(error).__name__}: {error}")
        gathered = self.comm.allgather(mine)
        if error is not None:
            raise error
        failed = [(r, msg) for r, (_, msg) in enumerate(gathered) if msg is not None]
        if failed:
            r, msg = failed[0]
            raise RuntimeError(f"distributed fit: rank {r} of {self.size} failed to start: "
                               f"{msg}")
        _compare_facts([f for f, _ in gathered])
        self._broadcast_state(net)

    def _broadcast_state(self, net):
        """Rank 0's parameters (and generator, as restored from a checkpoint) everywhere."""
        W, b = net.get_params()
        for array in W + b:
            self.comm.Bcast(array, root=0)
        net.set_params(W, b)
        net.rng.bit_generator.state = self.comm.bcast(net.rng.bit_generator.state, root=0)

    # -- faults -----------------------------------------------------------------------
    @contextlib.contextmanager
    def faults(self):
        """Abort the whole job when this rank raises anything not raised on all ranks.

        ``TrainingDiverged`` is decided from figures summed over the ranks, so it is raised
        on every rank together and left to propagate; anything else (bad data on one rank,
        a callback, an interrupt) prints its traceback and calls ``MPI_Abort``, which ends
        every rank of the job with a non-zero status.
        """
        try:
            yield
        except TrainingDiverged:  # raised on every rank together: end the run together
            self.close()
            raise
        except BaseException:
            text = traceback.format_exc()
            sys.stderr.write(f"gpubp: rank {self.rank} of {self.size} failed; aborting the "
                             f"MPI job.\n{text}")
            sys.stderr.flush()
            # MPI_Abort kills every rank at once; mpiexec's proxy may not yet have read the
            # traceback from this rank's pipe (CI once showed an empty stderr): a moment first
            time.sleep(ABORT_GRACE)
            self.comm.Abort(1)
            raise  # not reached: MPI_Abort does not return
        else:
            self.close()
        finally:
            watchdog = getattr(self, "_watchdog", None)
            if watchdog is not None:
                watchdog.stop()

    def check_identical(self, net):
        """Raise on every rank unless the parameters' checksums agree.

        Ranks stay identical because every rank applies the same summed gradient; this
        catches the cases where that would silently fail (a rank fed other data).
        """
        crc = 0
        W, b = net.get_params()
        for array in W + b:
            crc = zlib.crc32(np.ascontiguousarray(array).tobytes(), crc)
        sums = self.comm.allgather(crc)
        if len(set(sums)) != 1:
            raise RuntimeError(f"distributed fit: the ranks' parameters differ (checksums "
                               f"{sums}); every rank must be given the same data")


def _compare_facts(facts):
    """Raise ``ValueError`` naming the first fact on which a rank differs from rank 0."""
    root = facts[0]
    for key in root:
        values = [f.get(key) for f in facts]
        if any(v != root[key] for v in values):
            detail = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(f"distributed fit: every rank must be given the same {key}, "
                             f"got {detail}")


def start_facts(net, X, Y, **arguments):
    """What every rank must agree on before training: model, data, arguments.

    The data are compared by shape, dtype and a checksum of three rows (first, middle,
    last), which costs three row reads even on a memory-mapped file.
    """
    # the backend and how X is stored decide the path a step takes (and its collectives:
    # the split step's barriers, the sums' messages), so they must agree too
    storage = "sparse" if is_sparse(X) else "memory-mapped" if mapped.is_mapped(X) \
        else "in memory"
    facts = {"layer sizes": net.sizes, "activations": net.activation_names,
             "loss": net.loss_name, "loss parameter": net.loss_param,
             "dtype": net.dtype.name, "seed": net.seed,
             "backend": net.backend.name, "X shape": tuple(X.shape), "X storage": storage,
             "Y shape": tuple(Y.shape)}
    rows = sorted({0, X.shape[0] // 2, X.shape[0] - 1})
    crc = 0
    for array in (X, Y):
        if is_sparse(array):  # SciPy sparse X: its rows, densified (three rows)
            crc = zlib.crc32(array[rows].toarray().tobytes(), crc)
        else:
            crc = zlib.crc32(mapped.take(array, np.array(rows)).tobytes(), crc)
    facts["data sample checksum"] = crc
    facts.update(arguments)
    return facts
