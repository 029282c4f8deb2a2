"""Checks on user input: every error names the argument, the expected and the received value.

Data arrive as lists, NumPy arrays, CuPy arrays, pandas or polars data frames, Arrow objects
(or anything with ``__array__`` or the Arrow PyCapsule interface); they leave
as host NumPy arrays of the network's dtype, so the backends only ever see clean input.

Value checks (finite, label range, probabilities) run over row chunks, so that they never
allocate full-size temporaries; a memory-mapped array (``np.load(path, mmap_mode="r")``)
is checked without being read whole into memory and is returned as the same mapping,
never copied (see :mod:`gpubp.data.mapped`).
"""

import numbers

import numpy as np

from gpubp import losses
from gpubp.data import mapped
from gpubp.data.frames import is_tabular
from gpubp.data.frames import to_numpy as tabular_to_numpy

DTYPES = ("float32", "float64")


def to_numpy(data, name):
    """A host NumPy view or copy of ``data`` (CuPy arrays are copied to the host)."""
    if data is None:
        raise TypeError(f"{name} must be array-like of numbers, got None")
    if hasattr(data, "__cuda_array_interface__") and hasattr(data, "get"):
        data = data.get()  # CuPy: np.asarray refuses implicit device-to-host copies
    elif is_tabular(data):
        return tabular_to_numpy(data, name)  # frames, Arrow: checked column by column
    elif hasattr(data, "__dlpack__") and not hasattr(data, "__array__"):
        data = _from_dlpack(data, name)
    try:
        return np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like of numbers, got {type(data).__name__}: {exc}") from None


def _from_dlpack(data, name):
    """A host array from a DLPack producer: zero-copy on the CPU, through CuPy on a GPU."""
    try:
        return np.from_dlpack(data)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        try:
            import cupy  # optional: CuPy, present when a CuPy array is given
        except ImportError:
            raise TypeError(f"{name} is a DLPack tensor NumPy cannot read ({exc}) and CuPy "
                            f"is not installed to copy it from the GPU") from None
        return cupy.from_dlpack(data).get()


def _check_numeric(arr, name):
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers, got an array of dtype {arr.dtype} "
            f"(convert or encode it first)"
        )


def _chunks(arr):
    """Row chunks of ``arr`` (views), releasing the pages of a mapped array behind them."""
    pages = mapped.PageBudget([arr])
    for rows in mapped.row_chunks(arr.shape[0], arr[:1].nbytes):
        yield arr[rows]
        pages.touched(rows.stop - rows.start)
    pages.release()


def _count_non_finite(arr):
    bad = 0
    for chunk in _chunks(arr):
        bad += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
    return bad


def _check_finite(arr, name, source=None):
    """Refuse NaN and infinite values in ``arr``; ``source`` is what ``arr`` was cast from:
    finite values there that became infinite are reported as overflowing the dtype."""
    if arr.dtype.kind != "f":
        return
    bad = _count_non_finite(arr)
    if not bad:
        return
    if source is not None and source is not arr and source.dtype.kind in "biuf":
        already = _count_non_finite(source) if source.dtype.kind == "f" else 0
        if already < bad:
            largest = max(float(np.abs(chunk).max()) for chunk in _chunks(source))
            raise ValueError(
                f"{name} holds {bad - already} value(s) that overflow {arr.dtype.name} "
                f"(largest magnitude {largest:.3g}; {arr.dtype.name} holds up to "
                f"{float(np.finfo(arr.dtype).max):.3g}): scale the data or build the "
                f"network with dtype='float64'")
    raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s)")


def _as_dtype(arr, dtype, name):
    """``arr`` as a C-contiguous ``dtype`` array; a usable memory mapping is kept as is.

    A mapping that needs converting is copied when smaller than ``mapped.COPY_LIMIT`` and
    refused above, where the copy would read a file meant to stay on disk whole.
    """
    if not mapped.is_mapped(arr) or (arr.dtype == np.dtype(dtype) and arr.flags.c_contiguous):
        with np.errstate(over="ignore"):  # an overflow is reported by _check_finite
            return np.ascontiguousarray(arr, dtype=dtype)
    if arr.nbytes > mapped.COPY_LIMIT:
        layout = "" if arr.flags.c_contiguous else " in Fortran order"
        raise TypeError(
            f"{name} is a memory-mapped {arr.dtype} array{layout} and the network is "
            f"{np.dtype(dtype).name}: converting its {arr.nbytes / 2**20:.0f} MiB would read "
            f"the whole file into memory. "
            f"Save it as a C-ordered {np.dtype(dtype).name} .npy or build the network with "
            f"dtype={arr.dtype.name!r}"
        )
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(arr, dtype=dtype)


def check_X(X, n_inputs, dtype, name="X"):
    """Validate inputs ``X`` of shape ``(P, n_inputs)`` and return them as ``dtype``."""
    arr = to_numpy(X, name)
    _check_numeric(arr, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (P, {n_inputs}), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example, got shape {arr.shape}")
    if arr.shape[1] != n_inputs:
        raise ValueError(
            f"{name} must have {n_inputs} columns (the network's input size), got shape {arr.shape}"
        )
    source, arr = arr, _as_dtype(arr, dtype, name)
    _check_finite(arr, name, source)
    return arr


def check_Y(Y, P, n_outputs, loss, dtype, name="Y"):
    """Validate targets for ``P`` examples and return them as a float ``(P, n_outputs)`` array.

    Classifiers (``cross_entropy``, ``binary_cross_entropy``) also accept integer labels
    of shape ``(P,)``: class indices in ``[0, n_outputs)`` (one-hot encoded here), or
    0/1 labels for a single sigmoid output. Regressors with one output accept ``(P,)``.
    """
    # what the loss takes (gpubp.losses): one class per row, 0/1 labels, counts or reals
    kind = losses.LOSSES[loss].targets if loss in losses.LOSSES else "real"
    arr = to_numpy(Y, name)
    _check_numeric(arr, name)
    if arr.ndim == 1 and arr.shape[0] != P:
        raise ValueError(f"{name} must have {P} rows (one per example of the inputs), got "
                         f"shape {arr.shape}")
    if arr.ndim == 1 and kind == "labels":
        labels = _check_labels(arr, n_outputs, name)
        onehot = np.zeros((P, n_outputs), dtype=dtype)
        onehot[np.arange(P), labels] = 1
        return onehot
    if arr.ndim == 1 and n_outputs == 1:
        if kind == "binary":
            _check_labels(arr, 2, name)
        arr = arr.reshape(P, 1)
    if arr.ndim != 2 or arr.shape != (P, n_outputs):
        expected = f"({P}, {n_outputs})"
        if kind == "labels":
            expected += f" or integer labels ({P},)"
        elif n_outputs == 1:
            expected += f" or ({P},)"
        hint = ""
        if arr.ndim == 1 and kind == "binary":
            hint = (f": {n_outputs} sigmoid outputs are multi-label, one 0/1 column each; "
                    f"for one label per example use output='softmax' (class labels) or a "
                    f"single sigmoid output (0/1 labels)")
        raise ValueError(f"{name} must have shape {expected}, got shape {arr.shape}{hint}")
    source, arr = arr, _as_dtype(arr, dtype, name)
    _check_finite(arr, name, source)
    if kind in ("labels", "binary"):
        _check_probabilities(arr, name, loss, kind)
    if kind == "counts" and (arr < 0).any():
        raise ValueError(f"{name} must hold values >= 0 for loss={loss!r} (counts or rates), "
                         f"got a minimum of {float(arr.min())}")
    return arr


def _check_probabilities(arr, name, loss, kind):
    tol = 1e-3 if arr.dtype == np.float32 else 1e-6
    for chunk in _chunks(arr):
        if (chunk < 0).any() or (chunk > 1).any():
            raise ValueError(f"{name} must hold probabilities in [0, 1] for loss={loss!r}")
        if kind == "labels":
            # δ^L = a − y is the gradient of cross-entropy only when each target row sums to 1.
            sums = chunk.sum(axis=1, dtype=np.float64)
            if not np.allclose(sums, 1.0, atol=tol, rtol=0):
                worst = float(sums[np.argmax(np.abs(sums - 1))])
                raise ValueError(
                    f"{name} rows must sum to 1 for loss={loss!r} (one-hot or class "
                    f"probabilities), got a row summing to {worst}"
                )


def _check_labels(labels, n_classes, name):
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ValueError(f"{name} as a 1-D array must hold integer class labels, got non-integer values")
    labels = labels.astype(np.int64)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{name} labels must lie in [0, {n_classes - 1}] for {n_classes} classes, "
            f"got values in [{low}, {high}]"
        )
    return labels


def check_positive(value, name, kind=numbers.Real, allow_zero=False):
    """Return ``value`` if it is a positive number of ``kind``, else raise."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if kind is numbers.Integral else 'a number'}, got {value!r}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        finite = "" if np.isfinite(value) else ", which is not a finite number"
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}"
                         f"{finite}")
    return value


def check_dtype(dtype, name="dtype"):
    """The native float32 or float64 ``np.dtype`` that ``dtype`` spells, else an error.

    Every spelling NumPy accepts for them works (``np.float32``, ``"f4"``, ``"<f4"``,
    ``">f4"``, ``"single"``, ``float``, ``"double"``, ...); None (NumPy's float64) is
    refused, as a likely mistake.
    """
    expected = (f"{name} must be one of {DTYPES} (or a NumPy spelling of them: np.float32, "
                f"'f4', 'single', np.float64, float, 'f8', 'double', ...)")
    if dtype is None or isinstance(dtype, bool):
        raise TypeError(f"{expected}, got {dtype!r}")
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{expected}, got {dtype!r}") from None
    if resolved.kind != "f" or resolved.itemsize not in (4, 8):
        raise ValueError(f"{expected}, got {dtype!r} ({resolved})")
    return np.dtype(f"float{8 * resolved.itemsize}")
