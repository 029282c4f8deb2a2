"""Saving and loading networks: ``.npz`` with a JSON header, or safetensors with the same
header in its metadata (:mod:`gpubp.io.safetensors_file`, by the ``.safetensors`` suffix),
written atomically.

File layout (format version 1): ``header`` is a uint8 array holding UTF-8 JSON
``{"format": "gpubp", "version": 1, "sizes": [...], "hidden": [...], "output": ...,
"loss": ..., "dtype": ..., "inputs": ..., "dropout": [...]}`` (``inputs``: what the
network's inputs are, see :data:`INPUTS`; ``dropout``: the hidden layers' rates, 0 when
absent; ``"negative_slope"`` too when a layer is leaky_relu); ``W0 .. W{L-1}`` and
``b0 .. b{L-1}`` are the parameters.
Everything is read back with ``allow_pickle=False`` and checked before use.
"""

import json

import numpy as np

from gpubp import activations, losses
from gpubp.backends.base import check_options
from gpubp.core.checks import check_hidden
from gpubp.core.dropout import check_rates
from gpubp.core.network import ARGUMENTS, Network
from gpubp.data.validation import check_dtype
from gpubp.io.atomic import atomic_savez, fspath
from gpubp.io.npzfile import read_arrays
from gpubp.io import safetensors_file

FORMAT = "gpubp"
VERSION = 1


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
    arrays = {"header": header_array(header_of(net, inputs, **extra_header))}
    arrays.update(parameter_arrays(net))
    return arrays


def header_of(net, inputs="unknown", **extra_header):
    """The JSON header of ``net``'s model file (see :func:`model_arrays`)."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {tuple(INPUTS)}, got {inputs!r}")
    header = {"format": FORMAT, "version": VERSION, "sizes": net.sizes, "hidden": net.hidden,
              "output": net.output, "loss": net.loss_name, "dtype": net.dtype.name,
              **losses.keywords(net.loss_name, net.loss_param),
              "inputs": inputs, "dropout": net.dropout, **extra_header}
    if net.negative_slope is not None:  # leaky_relu's
        header["negative_slope"] = net.negative_slope
    return header


def parameter_arrays(net):
    """``{"W0": W^1, "b0": b^1, ...}``: ``net``'s parameters as NumPy arrays."""
    W, b = net.get_params()
    arrays = {}
    arrays.update({f"W{l}": w for l, w in enumerate(W)})
    arrays.update({f"b{l}": v for l, v in enumerate(b)})
    return arrays


def save(net, path, inputs="unknown", **extra_header):
    """Save ``net`` to ``path``; see the module docstring for the format (a path ending in
    ``.safetensors`` writes safetensors, any other ``.npz``).

    ``inputs`` records what the network's inputs are (see :func:`model_arrays`): state
    ``"standardized"`` for a network trained on ``gpubp.datasets.load(...)``'s (standardised)
    features, ``"raw"`` for unscaled ones, so that ``gpubp evaluate`` feeds it the same.
    """
    if safetensors_file.is_safetensors_path(fspath(path)):
        safetensors_file.write(fspath(path), header_of(net, inputs, **extra_header),
                               parameter_arrays(net))
    else:
        atomic_savez(path, model_arrays(net, inputs, **extra_header))


def read_npz(path):
    """All arrays of an ``.npz`` file and its parsed JSON header, or a clear ``ValueError``.

    The archive is read by :func:`gpubp.io.npzfile.read_arrays`: each array is checked
    against the file's size before it is allocated, and corruption is a ``ValueError``.
    """
    path = fspath(path)
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
    return check_header(path, header), arrays


def read_model_file(path):
    """``(header, arrays)`` of a model file, ``.npz`` or ``.safetensors`` (by suffix), checked
    as far as the header's format and version; see :func:`read_npz`."""
    path = fspath(path)
    if not safetensors_file.is_safetensors_path(path):
        return read_npz(path)
    header, arrays = safetensors_file.read(path)
    return check_header(path, header), arrays


def check_header(path, header):
    """``header`` if it is a gpubp header of this format version, else a ValueError."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gpubp model file (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path} has a corrupt header")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} has format version {header.get('version')!r}; this gpubp "
                         f"reads version {VERSION}")
    return header


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


def load(path, device="cpu", dtype=None, **network_options):
    """Load a network saved by :meth:`gpubp.Network.save`.

    Parameters
    ----------
    path : str or os.PathLike
    device : {"cpu", "cuda", "auto"} or None
        Where the loaded network runs (independent of where it was trained).
    dtype : None, or float32 / float64 in any NumPy spelling
        The loaded network's dtype; None keeps the file's. Converting float64
        parameters to float32 rounds them (and refuses values float32 cannot hold).
    **network_options
        Further :class:`gpubp.Network` options (``seed``, ``backend``, ``fallback``,
        backend options). The architecture (``sizes``, ``hidden``, ``output``, ``loss``,
        ``dropout``, ``negative_slope``) and the weights (so ``init``) come from the file:
        passing them, or any unknown keyword, is a TypeError.

    Errors in the file are ValueErrors naming the file; errors in the arguments name
    the argument, as :class:`gpubp.Network` does.
    """
    architecture = ("sizes", "hidden", "output", "loss", "dropout", "negative_slope", "init",
                    *losses.PARAMETERS)
    for key in network_options:
        if key in architecture:
            raise TypeError(f"load() got an unexpected keyword argument {key!r}: the "
                            f"architecture ({', '.join(architecture)}) comes from the file")
    own = [a for a in ARGUMENTS if a not in architecture]
    backend_options = {k: v for k, v in network_options.items() if k not in own}
    check_options(backend_options, network_options.get("backend") or "cpu", caller="load()",
                  arguments=["path", *own])
    if dtype is not None:
        dtype = check_dtype(dtype)
    header, arrays = read_model_file(path)
    sizes, W, b = check_parameters(path, header, arrays)
    try:  # the header's fields, checked as the Network checks them: errors blame the file
        hidden = check_hidden(header["hidden"] if len(sizes) > 2 else "sigmoid", len(sizes) - 2)
        output = activations.check_activation(header["output"], "output", activations.OUTPUT)
        loss = losses.check_pairing(output, header["loss"], activations.ACTIVATIONS)
        dropout = check_rates(header.get("dropout", 0.0), len(sizes) - 2)  # 0: older files
        slope = activations.check_negative_slope(header.get("negative_slope"), hidden)
        parameter = {k: header[k] for k in losses.PARAMETERS if k in header}
        losses.loss_param(loss, **parameter)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} has an invalid header ({type(exc).__name__}: {exc})") from None
    net = Network(sizes, hidden=hidden, output=output, loss=loss, device=device, dropout=dropout,
                  negative_slope=None if slope is None or "leaky_relu" not in hidden else slope,
                  **parameter,
                  dtype=header["dtype"] if dtype is None else dtype, **network_options)
    net.set_params(W, b)
    return net
