"""Fused kernels of gpubp, one module per target, each with the same signatures.

- ``gpubp.kernels.reference``: the equations in literal NumPy (the oracle).
- ``gpubp.kernels.cuda``: Numba CUDA kernels (``compile_ptx`` below compiles them).

Importing this package imports nothing heavy; each target module is imported by the
backend that uses it.
"""


def compile_ptx(cc=(9, 0)):
    """PTX text of every CUDA kernel and dtype for compute capability ``cc``.

    A thin wrapper so that ``gpubp.kernels.compile_ptx`` exists without importing Numba
    CUDA until it is called; see :func:`gpubp.kernels.cuda.compile_ptx`.
    """
    from gpubp.kernels import cuda  # keeps import gpubp light: numba.cuda only when PTX is asked for

    return cuda.compile_ptx(cc)
