"""``gpubp bench``: samples/s of ``fit`` against the reference path and the peers.

Modules:
    compare     the comparison table: runners in their own processes, in rounds
    runners     one runner per backend or peer (JAX, PyTorch), served over stdin/stdout
    scaling     1 rank, 2 ranks and 2 BLAS threads on one machine (``--scaling``)
"""
