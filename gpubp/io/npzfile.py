"""Reading ``.npz`` files that may be hostile: every array checked before it is allocated.

``np.load`` trusts a file: the ``.npy`` header of a member decides how much memory is
allocated before a byte of data is read, and a corrupted zip escapes as whatever the zip
internals raise (``NotImplementedError`` for an unknown compression method, ``struct.error``,
``zlib.error``...). :func:`read_arrays` reads the archive member by member instead:

1. the member's declared size is bounded by the size of the file on disk (times deflate's
   best ratio for compressed members), so no header can ask for terabytes;
2. the ``.npy`` header is parsed (``numpy.lib.format``) and its shape times item size must
   equal the member's data size, *before* the array is allocated;
3. object arrays are refused (no pickles), and the member is read to its end, so the zip
   CRC-32 catches flipped bits in the data.

Anything wrong is a ``ValueError`` naming the file and what is wrong; a missing file stays
``FileNotFoundError`` (and a permission problem ``PermissionError``).
"""

import os
import struct
import zipfile
import zlib

import numpy as np
import numpy.lib.format as npy_format

# deflate cannot compress by more than about 1032:1; stored members not at all
DEFLATE_MAX_RATIO = 1032
MAX_HEADER = 10_000  # numpy's own cap on a .npy header

# what the zip and .npy parsers raise on bytes they cannot make sense of
_CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError,
            NotImplementedError, AttributeError, struct.error, zlib.error, UnicodeDecodeError,
            OverflowError, TypeError, IndexError, SyntaxError, RuntimeError, OSError)
_PASS_THROUGH = (FileNotFoundError, PermissionError, IsADirectoryError)


def read_arrays(path, what="file"):
    """Every array of the ``.npz`` at ``path``, checked member by member.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file should be, for messages ("gpubp model file").

    Returns
    -------
    dict of str to ndarray
        The member names without ``.npy``.

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
    ValueError
        When the file is not a readable ``.npz`` of plain numeric or string arrays.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # missing or unreadable files raise here, unchanged
        disk_size = os.fstat(f.fileno()).st_size
        try:
            with zipfile.ZipFile(f) as archive:
                return _members(archive, disk_size)
        except _PASS_THROUGH:
            raise
        except _Refused as exc:
            raise ValueError(f"{path} is not a readable {what}: {exc}") from None
        except _CORRUPT as exc:
            raise ValueError(f"{path} is not a readable {what} (corrupt or truncated: "
                             f"{type(exc).__name__}: {exc})") from None


class _Refused(Exception):
    """A well-formed archive whose content is not acceptable (the message says why)."""


def _members(archive, disk_size):
    arrays = {}
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise _Refused(f"member {name!r} is not a .npy array")
        key = name[:-4]
        if key in arrays:
            raise _Refused(f"array {key!r} appears twice")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
        if info.compress_size > disk_size or info.file_size > ratio * info.compress_size + 64:
            raise _Refused(f"member {name!r} claims {info.file_size} bytes, more than a "
                           f"{disk_size}-byte file can hold")
        with archive.open(info) as member:
            arrays[key] = _read_npy(member, info.file_size, name)
    return arrays


def _read_npy(member, data_size, name):
    """One ``.npy`` member whose uncompressed size is ``data_size`` bytes."""
    version = npy_format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(member, MAX_HEADER)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = npy_format.read_array_header_2_0(member, MAX_HEADER)
    else:
        raise _Refused(f"member {name!r} has .npy format version {version}")
    if dtype.hasobject:
        raise _Refused(f"array {name[:-4]!r} holds Python objects (dtype {dtype}), which "
                       f"would need pickle; only numeric and string arrays are read")
    count = 1
    for n in shape:
        if not isinstance(n, int) or n < 0:
            raise _Refused(f"array {name[:-4]!r} has an invalid shape {shape}")
        count *= n
    nbytes = count * dtype.itemsize
    available = data_size - member.tell()
    if nbytes != available:
        raise _Refused(f"array {name[:-4]!r} claims shape {shape} of {dtype} ({nbytes} "
                       f"bytes) but the file holds {available} bytes for it")
    data = member.read(nbytes)
    if len(data) != nbytes or member.read(1):  # reading to the end checks the CRC-32
        raise _Refused(f"array {name[:-4]!r} is truncated")
    order = "F" if fortran else "C"
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order=order).copy(order)
