"""Atomic writes: a file is replaced whole or not at all.

Each write goes to a temporary file beside the destination, is flushed and fsynced, then
renamed over it (and the directory fsynced), so an interrupted save never leaves a
half-written file where the user's was. Leftover temporary files of dead processes are
removed.
"""

import os
import stat
import tempfile

import numpy as np


def atomic_savez(path, arrays):
    """Write ``arrays`` (a dict of name -> ndarray) to ``path`` as ``.npz``, atomically.

    See :func:`atomic_write`.
    """
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path, write):
    """Call ``write(f)`` on a binary file that becomes ``path`` only once complete.

    The data go to a temporary file in the same directory, are flushed to disk, then
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows): a crash leaves
    either the old file or the new one, never a half-written file. The temporary file is
    named after the target and the writing process (``.NAME.gpubp-PID-XXXX.tmp``), so the
    next save of the same target removes what a killed save left behind.

    ``path`` must not exist or be a regular file: a directory, device node (``/dev/full``),
    FIFO or socket is refused with a ValueError (a rename would replace it by a regular
    file). A symbolic link is followed: its target is replaced and the link kept (a
    dangling link creates its target). An ``OSError`` on the way names ``path`` as given,
    not the temporary file.
    """
    given = path = fspath(path)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = check_output_path(path, "path")
    remove_leftovers(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path) + f"{os.getpid()}-",
                                   suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise _naming(exc, given, f"creating a file in {directory!r} failed") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600); give it the mode a plain open() would
        # have (or keep the mode of the file it replaces)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
        _fsync_directory(directory)  # so that the rename itself survives a power cut
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (tmp, path):
            raise _naming(exc, given) from None
        raise


def _naming(exc, path, what="writing it failed"):
    """``exc`` (an OSError about a temporary file) as the same error about ``path``."""
    renamed = type(exc)(exc.errno, f"{exc.strerror}: cannot save {path!r} ({what})", path)
    renamed.__traceback__ = exc.__traceback__
    return renamed


def _fsync_directory(directory):
    if os.name != "posix":  # Windows cannot open a directory; its rename is journaled
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_SUFFIX = ".tmp"


def _temp_prefix(path):
    return f".{os.path.basename(path)}.gpubp-"


def fspath(path, name="path"):
    """``os.fspath(path)``, or a TypeError naming the argument ``name``."""
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got "
                        f"{path!r}") from None


def check_output_path(path, name="path"):
    """The directory ``path`` will be written in, or a ``ValueError`` naming ``path``.

    Checked before any work starts, so that a long run does not end in "no such directory".
    """
    path = fspath(path, name)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file path, got {path!r}, which is a directory")
    try:
        mode = os.stat(path).st_mode  # follows a symbolic link, as the save does
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:
        raise ValueError(f"{name} must be a writable file path, got {path!r} ({exc.strerror})") \
            from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device"
                if stat.S_ISBLK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "not a regular file")
        raise ValueError(f"{name} must be a regular file (or a new one), got {path!r}, which is "
                         f"{kind}: saving would replace it")
    if not os.path.isdir(directory):
        raise ValueError(f"{name} must be a path in an existing directory, got {path!r} "
                         f"({directory!r} does not exist)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{name} must be a path in a writable directory, got {path!r} "
                         f"({directory!r} is not writable)")
    return directory


def remove_leftovers(path):
    """Delete temporary files that a killed save of ``path`` left in its directory.

    Only files named after this target whose writing process no longer runs are removed:
    a save of the same target still in progress in another process keeps its file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and _process_alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass  # removed meanwhile, or not ours to remove: never fail a save for it


def _process_alive(pid):
    if pid == os.getpid():
        return False  # our own leftovers: this process is not writing them any more
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError, ValueError):
        return True  # exists (another user's) or cannot tell: leave it alone
    return True


def _mode_for(path):
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
