"""Reading a user's data files with pyarrow: CSV (also ``.csv.gz``), Parquet, Feather/Arrow IPC.

pyarrow parses in C++, multi-threaded, straight into typed columns: features as float64,
the label column as strings (class names or numbers, encoded later). A file that is wrong
is reported by column and line: a missing value, a cell that is not a number, a row whose
column count differs from the first line's. Locating the line is done only on that error
path, by re-reading the file in Python (pyarrow's fast reader does not number its rows).
"""

import csv
import gzip
import os

import numpy as np

from gpubp.data.frames import column_to_numpy, first_null
from gpubp.optional import require

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".feather", ".arrow", ".ipc")


def _pyarrow():
    # keeps import gpubp light: Arrow loads with the first file read
    require("pyarrow.csv", None, "reading data files", "pyarrow")
    return require("pyarrow", None, "reading data files")


def _open_text(path):
    opener = gzip.open if path.lower().endswith(".gz") else open
    return opener(path, "rt", newline="")


def _numbered_rows(path):
    """``(physical line number, cells)`` of every non-blank line (1-based numbers)."""
    with _open_text(path) as f:
        reader = csv.reader(f)
        for cells in reader:
            if any(c.strip() for c in cells):
                yield reader.line_num, cells


def first_row(path):
    for _, cells in _numbered_rows(path):
        return [c.strip() for c in cells]
    raise ValueError(f"{path} is empty")


def read_csv(path, label_column=-1):
    """Features and raw labels of a CSV file (``.csv`` or gzip-compressed ``.csv.gz``).

    Parameters
    ----------
    path : str or os.PathLike
        Comma-separated numeric features and one label column, with or without a header
        row (a first line with a non-numeric feature cell is a header).
    label_column : int, str or None
        The label column, by index (negative counts from the end) or header name; None
        for a file of features only.

    Returns
    -------
    X : ndarray of float64, shape (P, n)
    labels : ndarray of str, shape (P,), or None without a label column

    Raises
    ------
    ValueError
        Naming the file, the column and the line: a missing value, a non-numeric or
        non-finite feature, a row with the wrong number of columns.
    """
    pa = _pyarrow()
    path = os.fspath(path)
    first = first_row(path)
    width = len(first)
    if label_column is None:  # features only: no column is skipped
        col = width
        header = None if all(is_number(v) for v in first) else first
    elif _is_name(label_column):
        header = first  # a column named by its header
    else:
        col = _column_index(label_column, first, None, path)
        features_numeric = all(is_number(v) for i, v in enumerate(first) if i != col)
        header = None if features_numeric else first
    if width < 1 + (label_column is not None):
        raise ValueError(f"{path} must have at least one feature column and a label column, "
                         f"got {width} column(s)")
    if label_column is not None:
        col = _column_index(label_column, first, header, path)
    names = [f"c{j}" for j in range(width)]
    bad_rows = []

    def on_invalid_row(row):
        bad_rows.append(row)
        return "error"

    try:
        table = pa.csv.read_csv(
            path,
            read_options=pa.csv.ReadOptions(column_names=names, skip_rows=int(header is not None),
                                             use_threads=True),
            parse_options=pa.csv.ParseOptions(invalid_row_handler=on_invalid_row),
            convert_options=pa.csv.ConvertOptions(
                column_types={n: (pa.string() if j == col else pa.float64())
                              for j, n in enumerate(names)},
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        if bad_rows:
            _raise_ragged(path, width, header)
        _raise_conversion(path, header, col, width, exc)
    if table.num_rows == 0:
        raise ValueError(f"{path} has a header but no data rows")
    X = np.empty((table.num_rows, width - (col < width)), dtype=np.float64)
    finite = True
    for k, j in enumerate(j for j in range(width) if j != col):
        column = table.column(j)
        if column.null_count:
            _raise_at(path, header, first_null(column, pa), j,
                      "has a missing value (an empty cell)")
        values = column_to_numpy(column, f"{path} column {j}", pa)
        X[:, k] = values
        finite = finite and bool(np.isfinite(values).all())  # while the column is in cache
    if not finite:
        row, k = np.argwhere(~np.isfinite(X))[0]
        j = k + (k >= col)
        _raise_at(path, header, int(row), j, f"must be finite, got {X[row, k]}")
    if col == width:
        return X, None
    labels = _labels(table.column(col), pa)
    empty = np.flatnonzero(labels == "")
    if empty.size:
        _raise_at(path, header, int(empty[0]), col, "(the label) has a missing value")
    return X, labels


def _labels(column, pa):
    """Label strings, whitespace-trimmed; dictionary-encoded so few strings are built."""
    import pyarrow.compute as pc  # as above

    encoded = pc.dictionary_encode(pc.utf8_trim_whitespace(column)).combine_chunks()
    classes = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    return classes[encoded.indices.to_numpy(zero_copy_only=False)]


def _describe_column(j, header):
    return f"column {j} ({header[j]!r})" if header is not None else f"column {j}"


def _raise_at(path, header, row, j, what):
    """Raise ``ValueError`` for data row ``row`` (0-based, after any header), column ``j``."""
    index = row + (header is not None)
    for k, (line, _) in enumerate(_numbered_rows(path)):
        if k == index:
            break
    raise ValueError(f"{path}: line {line}, {_describe_column(j, header)} {what}")


def _raise_ragged(path, width, header):
    for line, cells in _numbered_rows(path):
        if len(cells) != width:
            raise ValueError(f"{path}: line {line} has {len(cells)} columns, expected {width} "
                             f"(as on the first line)")
    raise ValueError(f"{path}: a row has a number of columns other than {width}")


def _raise_conversion(path, header, col, width, exc):
    """Find the first non-numeric feature cell in Python (the error path only)."""
    for k, (line, cells) in enumerate(_numbered_rows(path)):
        if k == 0 and header is not None:
            continue
        for j, cell in enumerate(cells[:width]):
            if j != col and not is_number(cell):
                what = "has a missing value (an empty cell)" if not cell.strip() else \
                    f"must be numeric, got {cell.strip()!r}"
                raise ValueError(f"{path}: line {line}, {_describe_column(j, header)} {what}")
    raise ValueError(f"{path} could not be read as CSV ({exc})") from None


def read_table(path, label_column=-1):
    """Features and labels of a Parquet or Feather/Arrow IPC file.

    Parameters
    ----------
    path : str or os.PathLike
        ``.parquet``/``.pq``, or ``.feather``/``.arrow``/``.ipc``.
    label_column : int or str
        By index (negative counts from the end) or column name.

    Returns
    -------
    X : ndarray of float64, shape (P, n)
    labels : ndarray, shape (P,)
        Numbers for a numeric label column, strings otherwise.
    """
    pa = _pyarrow()
    path = os.fspath(path)
    lower = path.lower()
    try:
        if lower.endswith(PARQUET_SUFFIXES):
            import pyarrow.parquet as pq  # as above

            table = pq.read_table(path)
        else:
            import pyarrow.feather as feather  # as above

            table = feather.read_table(path)
    except pa.ArrowException as exc:
        kind = "Parquet" if lower.endswith(PARQUET_SUFFIXES) else "Arrow IPC"
        raise ValueError(f"{path} is not a readable {kind} file ({exc})") from None
    names = table.column_names
    if len(names) < 2:
        raise ValueError(f"{path} must have at least one feature column and a label column, "
                         f"got {len(names)} column(s)")
    if table.num_rows == 0:
        raise ValueError(f"{path} has no rows")
    col = _column_index(label_column, names, names if _is_name(label_column) else None, path)
    features = table.remove_column(col)
    X = np.empty((table.num_rows, len(names) - 1), dtype=np.float64)
    try:
        for k, (name, column) in enumerate(zip(features.column_names, features.columns)):
            X[:, k] = column_to_numpy(column, f"{path}: column {name!r}", pa)
    except TypeError as exc:  # a string column: in a file, a bad value, not a bad argument
        raise ValueError(str(exc)) from None
    if not np.isfinite(X).all():
        row, k = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{path}: column {features.column_names[k]!r} must be finite, got "
                         f"{X[row, k]} in row {row + 1}")
    label = table.column(col)
    if label.null_count:
        raise ValueError(f"{path}: label column {names[col]!r} has a missing value in row "
                         f"{first_null(label, pa) + 1}")
    kind = label.type
    if pa.types.is_dictionary(kind):
        label = label.cast(kind.value_type)
    if pa.types.is_string(label.type) or pa.types.is_large_string(label.type):
        return X, _labels(label, pa)
    return X, column_to_numpy(label, f"{path}: label column {names[col]!r}", pa)


def is_number(text):
    """Whether ``text`` parses as a float (a CSV cell that is a number, not a name)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_name(label_column):
    return isinstance(label_column, str) and not label_column.strip().lstrip("-").isdigit()


def _column_index(label_column, row, header, path):
    width = len(row)
    if _is_name(label_column):
        if header is None:
            raise ValueError(f"label_column {label_column!r} names a column, but {path} has no "
                             f"header row")
        if label_column not in header:
            raise ValueError(f"label_column must be one of the columns {list(header)}, got "
                             f"{label_column!r}")
        return list(header).index(label_column)
    if isinstance(label_column, bool):
        raise TypeError(f"label_column must be a column index or name, got {label_column!r}")
    try:
        index = int(label_column)
    except (TypeError, ValueError):
        raise TypeError(f"label_column must be a column index or name, got {label_column!r}") from None
    if not -width <= index < width:
        raise ValueError(f"label_column must be in [{-width}, {width - 1}] for {width} "
                         f"columns, got {index}")
    return index % width

