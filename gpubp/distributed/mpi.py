"""mpi4py, imported only when a run is distributed, and the process's place in the world."""

from gpubp.optional import hint, require

MPI_HINT = hint("distributed training", "mpi4py", "mpi") + \
    " (mpi4py and the mpich wheel, which brings mpiexec)"


def import_mpi():
    """mpi4py's ``MPI`` (importing it initialises MPI), or an ImportError saying what to install."""
    return require("mpi4py.MPI", "mpi", "distributed training")  # importing it initialises MPI


def world():
    """``MPI.COMM_WORLD`` (imports mpi4py, which initialises MPI)."""
    return import_mpi().COMM_WORLD


def _comm_or_world(comm):
    if comm is not None:
        return comm
    try:
        return world()
    except ImportError:
        return None


def rank(comm=None):
    """This process's rank in ``comm`` (default ``COMM_WORLD``; 0 without mpi4py)."""
    comm = _comm_or_world(comm)
    return 0 if comm is None else comm.Get_rank()


def size(comm=None):
    """Number of ranks in ``comm`` (default ``COMM_WORLD``; 1 without mpi4py)."""
    comm = _comm_or_world(comm)
    return 1 if comm is None else comm.Get_size()


def is_root(comm=None):
    """Whether this process is rank 0, the one that prints and writes files."""
    return rank(comm) == 0
