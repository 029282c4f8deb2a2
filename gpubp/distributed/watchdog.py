"""A daemon thread that ends a rank when another rank of its machine has died."""

import os
import socket
import sys
import threading


class Watchdog:
    """Ends this rank when another rank of the same machine has died (SIGKILL, OOM killer).

    A killed rank cannot say so, and the survivors would wait in their next collective:
    MPICH's ``mpiexec`` is meant to kill them, but was seen here leaving them spinning. A
    daemon thread checks every ``interval`` seconds that the ranks on this host still
    exist; when one is gone it prints which and exits the process (``os._exit``: no
    ``MPI_Finalize``, which would wait for the dead). Ranks on other hosts are left to the
    launcher (``srun`` ends a step whose task was killed).

    Parameters
    ----------
    comm : mpi4py communicator
        Gathered once (host name and process id of every rank): a collective call.
    interval : float
    """

    def __init__(self, comm, interval=0.5):
        me = comm.Get_rank()
        host = socket.gethostname()
        everyone = comm.allgather((host, os.getpid()))
        self.peers = [(r, pid) for r, (h, pid) in enumerate(everyone) if h == host and r != me]
        self.rank, self.size = me, comm.Get_size()
        self._stopped = threading.Event()
        self.interval = interval
        if self.peers:
            threading.Thread(target=self._watch, name="gpubp-watchdog", daemon=True).start()

    def stop(self):
        self._stopped.set()

    def _watch(self):
        while not self._stopped.wait(self.interval):
            for r, pid in self.peers:
                if not _alive(pid) and not self._stopped.is_set():
                    sys.stderr.write(f"gpubp: rank {r} of {self.size} (pid {pid}) has died; "
                                     f"ending rank {self.rank}.\n")
                    sys.stderr.flush()
                    os._exit(1)


def _alive(pid):
    """Whether process ``pid`` exists and is not a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
