"""Saving and loading networks: ``.npz`` with a JSON header, written atomically.

File layout (format version 1): ``header`` is a uint8 array holding UTF-8 JSON
``{"format": "gpubp", "version": 1, "sizes": [...], "hidden": [...], "output": ...,
"loss": ..., "dtype": ...}``; ``W0 .. W{L-1}`` and ``b0 .. b{L-1}`` are the parameters.
Everything is read back with ``allow_pickle=False`` and checked before use.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "gpubp"
VERSION = 1


def atomic_savez(path, arrays):
    """Write ``arrays`` (a dict of name -> ndarray) to ``path`` as ``.npz``, atomically.

    The data go to a temporary file in the same directory, are flushed to disk, then
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows): a crash leaves
    either the old file or the new one, never a half-written file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gpubp-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600); give it the mode a plain open() would
        # have (or keep the mode of the file it replaces)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mode_for(path):
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def header_array(header):
    return np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)


def model_arrays(net, **extra_header):
    """The arrays of a model file: ``header`` (with ``extra_header`` merged in) and the parameters.

    Extra header keys (JSON-able) ride along and are ignored by :func:`load`: the CLI keeps
    class names there, checkpoints their training state.
    """
    W, b = net.get_params()
    header = {"format": FORMAT, "version": VERSION, "sizes": net.sizes, "hidden": net.hidden,
              "output": net.output, "loss": net.loss_name, "dtype": net.dtype.name,
              **extra_header}
    arrays = {"header": header_array(header)}
    arrays.update({f"W{l}": w for l, w in enumerate(W)})
    arrays.update({f"b{l}": v for l, v in enumerate(b)})
    return arrays


def save(net, path, **extra_header):
    """Save ``net`` to ``path``; see the module docstring for the format."""
    atomic_savez(path, model_arrays(net, **extra_header))


def read_npz(path):
    """All arrays of an ``.npz`` file and its parsed JSON header, or a clear ``ValueError``."""
    path = os.fspath(path)
    try:
        # open the file ourselves: np.load leaks its handle when the zip is corrupt
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable gpubp model file ({type(exc).__name__}: {exc})") from None
    if "header" not in arrays:
        raise ValueError(f"{path} is not a gpubp model file (no header)")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} has a corrupt header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gpubp model file (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path} has a corrupt header")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} has format version {header.get('version')!r}; this gpubp "
                         f"reads version {VERSION}")
    return header, arrays


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
    try:
        sizes = header["sizes"]
        L = len(sizes) - 1
        net = Network(sizes, hidden=header["hidden"] if L > 1 else "sigmoid",
                      output=header["output"], loss=header["loss"], device=device,
                      dtype=header["dtype"], **network_options)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} has an invalid header ({type(exc).__name__}: {exc})") from None
    W, b = [], []
    for l in range(L):
        for name, out in ((f"W{l}", W), (f"b{l}", b)):
            if name not in arrays:
                raise ValueError(f"{path} is missing array {name!r}")
            if arrays[name].dtype != net.dtype:
                raise ValueError(f"{path}: array {name!r} has dtype {arrays[name].dtype}, "
                                 f"the header says {net.dtype}")
            out.append(arrays[name])
    try:
        net.set_params(W, b)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} holds parameters that do not fit its header: {exc}") from None
    return net
