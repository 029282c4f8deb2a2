"""Fused kernels of gpubp, one module per target, each with the same signatures.

- ``gpubp.kernels.reference``: the equations in literal NumPy (the oracle).

Importing this package imports nothing heavy; each target module is imported by the
backend that uses it.
"""
