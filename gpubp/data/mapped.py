"""Arrays backed by a file (``np.load(path, mmap_mode="r")``): passes in chunks, bounded memory.

A memory-mapped ``.npy`` larger than memory can be trained on when nothing reads it whole:

- batches gather their rows with :func:`take`, which reads a mapped array's rows with
  ``pread`` into the batch buffer instead of through the mapping. Reading a row through
  the mapping maps far more than the row (Linux maps the page-cache folio around each
  fault; docs/performance.md, "Memory-mapped rows"), so an epoch of random rows would
  map the whole file into the process;
- sequential passes (input checks, evaluation) go over row chunks (:func:`row_chunks`)
  and hand the pages they touched back to the kernel as they go (:class:`PageBudget`).
  The pages are clean copies of the file, so dropping them from the process
  (``madvise(MADV_DONTNEED)``) loses nothing: they stay in the page cache.

Without either, every page a pass touches counts in the process's resident memory until
the kernel evicts it, and a job's memory limit (Slurm's cgroup, say) sees the whole file.
"""

import mmap
import os
import weakref

import numpy as np

# a memory-mapped array that must be converted (another dtype, not C-ordered) is copied into
# memory up to this size, and refused above it (the copy would read the file whole)
COPY_LIMIT = 64 << 20
CHUNK_BYTES = 8 << 20  # rows per chunk of a checking pass: about this many bytes
BUDGET_BYTES = 16 << 20  # mapped bytes touched between two releases of the pages
# Linux maps up to this much of the page cache around each page fault of a file mapping
# ("fault-around", 64 KiB by default): a row read at random can add this much to the RSS
FAULT_AROUND_BYTES = 64 << 10


def mapping_of(array):
    """The :class:`mmap.mmap` an array's memory comes from, or None for ordinary memory.

    Follows the ``base`` chain, so views and ``np.ascontiguousarray`` of a
    ``np.memmap`` (a slice, a row range) are found too.
    """
    seen = 0
    while array is not None and seen < 64:  # bases never nest deeper in practice
        if isinstance(array, mmap.mmap):
            return array
        array = getattr(array, "base", None)
        seen += 1
    return None


def is_mapped(array):
    """Whether ``array`` reads a file through a memory mapping."""
    return mapping_of(array) is not None


def release(*arrays):
    """Drop the resident pages of the mapped ``arrays`` (others are ignored).

    The data are not lost: the mapping is read-only or shared, so the next access reads
    the pages again from the page cache or the file.
    """
    for array in arrays:
        mm = mapping_of(array)
        if mm is not None and not mm.closed and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED)


def row_chunks(n_rows, row_bytes, chunk_bytes=CHUNK_BYTES):
    """Slices of at most about ``chunk_bytes`` bytes covering ``n_rows`` rows in order.

    Parameters
    ----------
    n_rows : int
    row_bytes : int
        Bytes of one row (``array[0].nbytes``).
    chunk_bytes : int
    """
    step = max(1, chunk_bytes // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def chunks(n_rows, step, arrays):
    """Slices of ``step`` rows covering ``n_rows`` rows in order, releasing the pages of the
    mapped ``arrays`` read through them as the pass goes (see :class:`PageBudget`), so
    that a file larger than memory stays out of resident memory."""
    pages = PageBudget(arrays)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))
        pages.touched(min(step, n_rows - start))
    pages.release()


class PageBudget:
    """Release the pages of mapped arrays after every ``budget`` bytes of rows read.

    Parameters
    ----------
    arrays : sequence of ndarray
        The inputs of a pass; ordinary arrays are ignored (then :meth:`touched` is free).
    budget : int
        Bytes of rows read between two releases; the resident memory a pass adds is
        about this much.
    """

    def __init__(self, arrays, budget=BUDGET_BYTES):
        self.arrays = [a for a in arrays if a is not None and is_mapped(a)]
        # a row read at random brings in the pages mapped around its fault
        self.row_bytes = sum(max(a[:1].nbytes, FAULT_AROUND_BYTES) for a in self.arrays)
        self.budget = budget
        self.pending = 0

    def touched(self, n_rows):
        """Record that ``n_rows`` rows of every array were read; release if over budget."""
        if not self.arrays:
            return
        self.pending += n_rows * self.row_bytes
        if self.pending >= self.budget:
            self.release()

    def release(self):
        release(*self.arrays)
        self.pending = 0


_files = {}  # id(np.memmap) -> its file, open for pread while the memmap lives


def _file_of(m):
    f = _files.get(id(m))
    if f is None:
        f = _files[id(m)] = open(m.filename, "rb")  # noqa: SIM115 - closed with the memmap
        weakref.finalize(m, _close, id(m))
    return f


def _close(key):
    f = _files.pop(key, None)
    if f is not None:
        f.close()


def _file_rows(array):
    """``(file descriptor, byte offset of array[0] in the file)`` for a row-range view of a
    ``np.memmap``, or None when ``array`` cannot be read with ``pread``."""
    # the np.memmap made over the mmap itself: its data start at file offset ``m.offset``
    # (views of it are np.memmap too, but carry that same ``offset`` attribute)
    m = array
    while m is not None and not (isinstance(m, np.memmap) and isinstance(m.base, mmap.mmap)):
        m = getattr(m, "base", None)
    if m is None or getattr(m, "filename", None) is None or not array.flags.c_contiguous:
        return None
    start = array.__array_interface__["data"][0] - m.__array_interface__["data"][0]
    return _file_of(m).fileno(), m.offset + start


def take(array, index, out=None):
    """``array[index]`` (rows), into ``out`` when given; mapped rows are read by ``pread``.

    Parameters
    ----------
    array : ndarray, shape (P, ...)
    index : ndarray of int, shape (B,)
    out : ndarray, shape (B, ...), optional

    Returns
    -------
    ndarray, shape (B, ...)
    """
    found = _file_rows(array) if is_mapped(array) else None
    if found is None:
        return np.take(array, index, axis=0, out=out)
    if out is None:
        out = np.empty((len(index),) + array.shape[1:], dtype=array.dtype)
    fd, offset = found
    row_bytes = array[:1].nbytes
    # the file offsets as Python ints, formed once (not a conversion per row)
    starts = (np.asarray(index, dtype=np.int64) * row_bytes + offset).tolist()
    for i, start in enumerate(starts):
        if os.preadv(fd, [out[i]], start) != row_bytes:
            raise OSError(f"short read of row {(start - offset) // row_bytes} from a "
                          f"memory-mapped file")
    return out
