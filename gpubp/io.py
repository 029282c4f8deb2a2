"""Saving and loading networks: ``.npz`` with a JSON header, written atomically.

File layout (format version 1): ``header`` is a uint8 array holding UTF-8 JSON
``{"format": "gpubp", "version": 1, "sizes": [...], "hidden": [...], "output": ...,
"loss": ..., "dtype": ..., "inputs": ...}`` (``inputs``: what the network's inputs are,
see :data:`INPUTS`); ``W0 .. W{L-1}`` and ``b0 .. b{L-1}`` are the parameters.
Everything is read back with ``allow_pickle=False`` and checked before use.
"""

import json
import os
import tempfile

import numpy as np

from gpubp.npzfile import read_arrays

FORMAT = "gpubp"
VERSION = 1


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
    """
    path = os.fspath(path)
    directory = check_output_path(path, "path")
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path) + f"{os.getpid()}-",
                               suffix=TEMP_SUFFIX, dir=directory)
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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def check_output_path(path, name="path"):
    """The directory ``path`` will be written in, or a ``ValueError`` naming ``path``.

    Checked before any work starts, so that a long run does not end in "no such directory".
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file path, got {path!r}, which is a directory")
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


def header_array(header):
    return np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)


# What a model's inputs are, recorded in its header as "inputs" (the CLI applies exactly that):
INPUTS = {
    "raw": "raw features (the header's cli.scaler, if any, standardises them)",
    "standardized": "standardised features, as gpubp.datasets.load gives them (scale=True: "
                    "the training split's mean and deviation)",
    "unknown": "not recorded (used as given)",
}


def model_arrays(net, inputs="unknown", **extra_header):
    """The arrays of a model file: ``header`` (with ``extra_header`` merged in) and the parameters.

    ``inputs`` (a key of :data:`INPUTS`) records what the network was trained on, so that
    ``gpubp evaluate``/``predict``/``export`` feed it the same: ``"raw"`` features (the CLI's
    ``train`` stores its scaler beside), features ``"standardized"`` as
    :func:`gpubp.datasets.load` gives them, or ``"unknown"`` (the default of a model saved
    from Python: ``gpubp.io.save(net, path, inputs="standardized")`` states it).

    Extra header keys (JSON-able) ride along and are ignored by :func:`load`: the CLI keeps
    class names there, checkpoints their training state.
    """
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {tuple(INPUTS)}, got {inputs!r}")
    W, b = net.get_params()
    header = {"format": FORMAT, "version": VERSION, "sizes": net.sizes, "hidden": net.hidden,
              "output": net.output, "loss": net.loss_name, "dtype": net.dtype.name,
              "inputs": inputs, **extra_header}
    arrays = {"header": header_array(header)}
    arrays.update({f"W{l}": w for l, w in enumerate(W)})
    arrays.update({f"b{l}": v for l, v in enumerate(b)})
    return arrays


def save(net, path, inputs="unknown", **extra_header):
    """Save ``net`` to ``path``; see the module docstring for the format.

    ``inputs`` records what the network's inputs are (see :func:`model_arrays`): state
    ``"standardized"`` for a network trained on ``gpubp.datasets.load(...)``'s (standardised)
    features, ``"raw"`` for unscaled ones, so that ``gpubp evaluate`` feeds it the same.
    """
    atomic_savez(path, model_arrays(net, inputs, **extra_header))


def read_npz(path):
    """All arrays of an ``.npz`` file and its parsed JSON header, or a clear ``ValueError``.

    The archive is read by :func:`gpubp.npzfile.read_arrays`: each array is checked
    against the file's size before it is allocated, and corruption is a ``ValueError``.
    """
    path = os.fspath(path)
    arrays = read_arrays(path, "gpubp model file")
    if "header" not in arrays:
        raise ValueError(f"{path} is not a gpubp model file (no header)")
    raw = arrays.pop("header")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path} has a corrupt header (a {raw.dtype} array of shape "
                         f"{raw.shape}, expected 1-D uint8 JSON)")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} has a corrupt header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gpubp model file (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path} has a corrupt header")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} has format version {header.get('version')!r}; this gpubp "
                         f"reads version {VERSION}")
    return header, arrays


def check_parameters(path, header, arrays):
    """The layer sizes of ``header``, checked against the stored ``W{l}``/``b{l}`` arrays.

    Runs before any network is built, so that a header claiming huge layers is refused
    instead of allocated.

    Returns
    -------
    sizes : list of int
    W, b : lists of ndarray
    """
    sizes = header.get("sizes")
    if not (isinstance(sizes, list) and len(sizes) >= 2
            and all(type(n) is int and n >= 1 for n in sizes)):
        raise ValueError(f"{path} has an invalid header: sizes must be a list of at least two "
                         f"positive integers, got {sizes!r}")
    dtype = header.get("dtype")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{path} has an invalid header: dtype must be 'float32' or "
                         f"'float64', got {dtype!r}")
    W, b = [], []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for name, shape, out in ((f"W{l}", (n_in, n_out), W), (f"b{l}", (n_out,), b)):
            if name not in arrays:
                raise ValueError(f"{path} is missing array {name!r}")
            arr = arrays[name]
            if arr.shape != shape:
                raise ValueError(f"{path} holds parameters that do not fit its header: "
                                 f"{name[0]}[{l}] must have shape {shape} (sizes {sizes}), "
                                 f"got {arr.shape}")
            if arr.dtype != np.dtype(dtype):
                raise ValueError(f"{path}: array {name!r} has dtype {arr.dtype}, the header "
                                 f"says {dtype}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{path}: array {name!r} holds NaN or infinite values")
            out.append(arr)
    return sizes, W, b


def load(path, device="cpu", **network_options):
    """Load a network saved by :meth:`gpubp.Network.save`.

    Parameters
    ----------
    path : str or os.PathLike
    device : {"cpu", "cuda", "auto"} or None
        Where the loaded network runs (independent of where it was trained).
    **network_options
        Further :class:`gpubp.Network` options (``backend``, ``fallback``, ...).
    """
    from gpubp.network import Network

    header, arrays = read_npz(path)
    sizes, W, b = check_parameters(path, header, arrays)
    try:
        net = Network(sizes, hidden=header["hidden"] if len(sizes) > 2 else "sigmoid",
                      output=header["output"], loss=header["loss"], device=device,
                      dtype=header["dtype"], **network_options)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} has an invalid header ({type(exc).__name__}: {exc})") from None
    net.set_params(W, b)
    return net
