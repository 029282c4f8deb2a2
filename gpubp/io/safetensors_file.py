"""Model files in the safetensors format: the tensors, and the header as metadata.

safetensors (Hugging Face) stores raw little-endian tensors behind a JSON index; nothing
in it is executed or unpickled when it is read, and the Rust reader checks every offset
against the file before any tensor is touched. A gpubp model file holds ``W0 .. W{L-1}``
and ``b0 .. b{L-1}`` (``W^l`` as ``(n_{l-1}, n_l)``, gpubp's layout, not
``torch.nn.Linear``'s transpose) and, in the index's ``__metadata__``, ``"format":
"gpubp"`` and ``"gpubp"``: the same JSON header as a ``.npz`` model file
(:mod:`gpubp.io.model`). Needs ``gpubp[safetensors]``.

This module reads and writes; :mod:`gpubp.io.model` checks what was read.
"""

import json

from gpubp.io.atomic import atomic_write
from gpubp.optional import require

SUFFIX = ".safetensors"


def _safetensors():
    # optional: safetensors (gpubp[safetensors]), loaded with the first such file
    require("safetensors.numpy", "safetensors", "safetensors model files")
    return require("safetensors", "safetensors", "safetensors model files")


def is_safetensors_path(path):
    """Whether ``path`` (a str) names a safetensors file, by its suffix."""
    return path.lower().endswith(SUFFIX)


def write(path, header, arrays):
    """Write ``arrays`` (name -> ndarray) to ``path`` with ``header`` (a JSON-able dict) in
    the metadata, atomically (:func:`gpubp.io.atomic.atomic_write`)."""
    st = _safetensors()
    data = st.numpy.save(dict(arrays),
                         metadata={"format": "gpubp", "gpubp": json.dumps(header)})
    atomic_write(path, lambda f: f.write(data))


def read(path):
    """The parsed header and the tensors of the safetensors model file ``path``.

    Returns
    -------
    header : dict
        The metadata's ``"gpubp"`` JSON (checked by the caller).
    arrays : dict of str to ndarray

    Raises
    ------
    ValueError
        The file is not a safetensors file, is corrupt or truncated, or holds no gpubp
        header (a foreign safetensors file, e.g. a PyTorch ``state_dict``: see
        :func:`gpubp.from_torch`).
    """
    st = _safetensors()
    try:
        with st.safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            if "gpubp" not in metadata:
                raise ValueError(
                    f"{path} is not a gpubp model file: a safetensors file without gpubp "
                    f"metadata (tensors {names[:6]}{' ...' if len(names) > 6 else ''}); a "
                    f"PyTorch model's weights load with gpubp.from_torch(module)")
            arrays = {name: f.get_tensor(name) for name in names}
    except st.SafetensorError as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        header = json.loads(metadata["gpubp"])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} has a corrupt header ({exc})") from None
    return header, arrays
