"""Data-parallel training over MPI: the sum over P, split among the ranks.

Only :mod:`gpubp.training` imports this package (and mpi4py is imported only when a run is
distributed).

Modules:
    ranks          mpi4py access, the world, rank/size/is_root, the run's process group
    reductions     the strategies by name: "shared", "slice-sums", "iallreduce",
                   "allreduce", "nccl" (create_reduction); one process uses
                   gpubp.core.reduction.Identity
    shared_memory  the slice sums of "slice-sums" in MPI-3 shared memory
    split_step     the split step of "shared": one machine's ranks split each batch
    watchdog       ends the whole job when one rank dies
"""

from gpubp.backends.placement import local_rank, select_gpu
from gpubp.distributed.ranks import (LOCAL, MPI_HINT, Group, Local, group, is_root, rank, size,
                                     world)
from gpubp.distributed.watchdog import Watchdog

__all__ = ["world", "rank", "size", "is_root", "local_rank", "select_gpu", "group", "Group",
           "Local", "LOCAL", "Watchdog", "MPI_HINT"]
