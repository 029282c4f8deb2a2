"""Which GPU a process takes: its rank among the processes of its node, from the launcher.

Kept with the backends (not with :mod:`gpubp.distributed`) because the CUDA backend must
choose its device before it allocates anything, whether or not a run is distributed.
"""

import os
import sys

from gpubp.backends.cuda_probe import simulated

# environment variables in which launchers give a process its rank among those of its node
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                        "PMI_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")



def local_rank():
    """This process's rank among those of its node, from the launcher's environment.

    ``mpiexec`` (MPICH's Hydra, Open MPI) and ``srun`` set it; without one, the global
    rank is used (one node).
    """
    for name in LOCAL_RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized():
        return MPI.COMM_WORLD.Get_rank()
    return 0


def select_gpu():
    """Make GPU ``local_rank % device_count`` CuPy's current device, inside an MPI job.

    Called before a CUDA backend allocates anything. Does nothing outside an MPI job of
    several ranks (mpi4py not imported by the program, or one rank), or without CuPy.
    """
    if "mpi4py.MPI" not in sys.modules:
        return None
    MPI = sys.modules["mpi4py.MPI"]
    if not MPI.Is_initialized() or MPI.Is_finalized() or MPI.COMM_WORLD.Get_size() == 1:
        return None
    if simulated():
        return None  # the simulator has one simulated device
    try:
        import cupy  # optional: CuPy (gpubp[cuda12] / [cuda13])
    except ImportError:
        return None
    n = cupy.cuda.runtime.getDeviceCount()
    device = local_rank() % n
    cupy.cuda.Device(device).use()
    return device
