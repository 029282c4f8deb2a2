"""Tables in, NumPy out: pandas and polars data frames, Arrow tables and arrays.

Everything goes through Arrow: pandas and polars frames, pyarrow objects and any object
speaking the Arrow PyCapsule interface (``__arrow_c_stream__``, ``__arrow_c_array__``)
become a ``pyarrow.Table`` (or a single column), whose columns are checked one by one so
that an error names the column and the row: a column of strings where numbers are
expected, or a missing value. pyarrow is needed only when such an object is passed.
"""

import numpy as np

from gpubp.optional import require

_FRAME_MODULES = ("pandas", "polars", "pyarrow")


def is_tabular(data):
    """Whether ``data`` is a data frame, an Arrow object or speaks the Arrow C interface."""
    if isinstance(data, np.ndarray):
        return False
    module = type(data).__module__.split(".", 1)[0]
    return module in _FRAME_MODULES or hasattr(data, "__arrow_c_stream__") \
        or hasattr(data, "__arrow_c_array__")


def _pyarrow(name):
    # keeps import gpubp light: pyarrow only when a table is given
    return require("pyarrow", None, f"{name} is a data frame or an Arrow object; reading it")


def as_frame(data):
    """``data`` as scikit-learn reads it: Arrow C-interface producers (which its
    ``check_array`` cannot read) become a ``pyarrow.Table`` (keeping the column names for
    ``feature_names_in_``); frames, arrays and everything else pass unchanged."""
    module = type(data).__module__.split(".", 1)[0]
    if is_tabular(data) and module not in _FRAME_MODULES and not hasattr(data, "__array__"):
        return to_arrow(data, "X")
    return data


def to_arrow(data, name):
    """``data`` as a ``pyarrow.Table`` (2-D) or ``pyarrow.ChunkedArray`` (1-D)."""
    pa = _pyarrow(name)
    if isinstance(data, (pa.Table, pa.ChunkedArray)):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.Array):
        return pa.chunked_array([data])
    module = type(data).__module__.split(".", 1)[0]
    one_d = module in ("pandas", "polars") and type(data).__name__ == "Series"
    try:
        if module == "pandas":
            # pandas' own converters keep the column names and the nullable dtypes' masks
            if getattr(data, "ndim", 1) == 2:
                return pa.Table.from_pandas(data, preserve_index=False)
            return pa.chunked_array([pa.array(data, from_pandas=True)])
        if one_d:
            return pa.chunked_array(data)  # a polars Series: a stream of one column
        if hasattr(data, "__arrow_c_stream__"):
            try:  # a stream of record batches (a table), else of one column
                reader = pa.RecordBatchReader.from_stream(data)
            except (pa.ArrowException, TypeError, ValueError):
                return pa.chunked_array(data)
            return reader.read_all()
        if hasattr(data, "__arrow_c_array__"):
            arr = pa.array(data)
            if pa.types.is_struct(arr.type):
                return pa.Table.from_struct_array(arr)
            return pa.chunked_array([arr])
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like of numbers; its {type(data).__name__} "
                        f"could not be read through Arrow ({exc})") from None
    raise TypeError(f"{name} must be array-like of numbers, got {type(data).__name__}")


def table_to_numpy(table, name, dtype=np.float64):
    """The columns of an Arrow table stacked into a ``(P, n)`` array of ``dtype``.

    Raises
    ------
    TypeError
        When a column does not hold numbers (names the column and its Arrow type).
    ValueError
        When a column has a missing value (names the column and the first such row).
    """
    pa = _pyarrow(name)
    out = np.empty((table.num_rows, table.num_columns), dtype=dtype)
    for j, (column_name, column) in enumerate(zip(table.column_names, table.columns)):
        out[:, j] = column_to_numpy(column, f"{name} column {column_name!r} (index {j})", pa)
    return out


def column_to_numpy(column, name, pa=None):
    """One numeric Arrow column as a NumPy array, or an error naming it."""
    pa = pa or _pyarrow(name)
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind) or pa.types.is_decimal(kind)):
        raise TypeError(f"{name} must hold numbers, got Arrow type {kind}")
    if column.null_count:
        first = first_null(column, pa)
        raise ValueError(f"{name} has {column.null_count} missing value(s), the first in "
                         f"row {first + 1}")
    if pa.types.is_decimal(kind) or pa.types.is_boolean(kind):
        column = column.cast(pa.float64())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column.to_numpy(zero_copy_only=False)


def first_null(column, pa):
    """0-based index of the first null of an Arrow column."""
    import pyarrow.compute as pc  # as above

    return int(pc.index(pc.is_null(column), pa.scalar(True)).as_py())


def to_numpy(data, name):
    """A NumPy array from a frame, Arrow object or Arrow C-interface producer.

    2-D data (frames, tables, record batches, struct arrays) must be numeric, column by
    column, and become ``(P, n)`` float64; 1-D data (series, arrays) keep their type when
    it is not numeric (string labels), so that the caller decides what is acceptable.
    """
    arrow = to_arrow(data, name)
    pa = _pyarrow(name)
    if isinstance(arrow, pa.Table):
        return table_to_numpy(arrow, name)
    kind = arrow.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_decimal(kind):
        return column_to_numpy(arrow, name, pa)
    if arrow.null_count:
        raise ValueError(f"{name} has {arrow.null_count} missing value(s), the first in row "
                         f"{first_null(arrow, pa) + 1}")
    if pa.types.is_dictionary(kind):
        arrow = arrow.cast(kind.value_type)
    return np.asarray(arrow.to_pylist())
