"""Inputs as the network takes them: checks, data frames, sparse matrices, memory-mapped rows.

Modules:
    validation  check_X / check_Y: shapes, dtypes, finiteness, labels to one-hot
    inputs      sparse X and per-example weights
    frames      pandas / polars / pyarrow tables and the Arrow PyCapsule interface
    mapped      memory-mapped .npy rows: chunked checks, page budgets, row gathers
"""
