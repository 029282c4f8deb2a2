"""The physical bound of a benchmark case on the CPU: what one epoch cannot go below.

The ``bound`` runner times, per epoch of the case, three parts, each the way the machine
does it fastest that this project can reach:

- ``gemm``: the step's matrix products alone (the compiled epoch's own ``np.dot`` calls
  on its own buffers, :func:`gpubp.kernels.cpu_epoch.gemm_epoch`), on one BLAS thread for a
  small step and otherwise the faster of one and all threads, timed each epoch;
- ``activation``: per step and hidden layer, ``g(z)`` over the layer's ``P n_l`` elements
  by NumPy's (SciPy's) vectorised ufunc (``expit``, ``tanh``, ``maximum``, ``erf``) and
  ``δ ⊙ g'`` by one vectorised pass over the same elements (gelu: plus a pass of
  ``exp``);
- ``update``: per step, the optimizer's one fused elementwise pass over the ``N``
  parameters (:mod:`gpubp.kernels.cpu_update`'s loops, which LLVM vectorises: no
  transcendental but ``sqrt``); plain SGD over the biases alone (its weights' step is
  the GEMM's ``beta``, inside ``gemm``).

The bound is their sum; ``gpubp bench`` prints each runner's ``% of bound`` (bound time
/ runner time). It leaves out the output layer's softmax and loss and the batch's gather
(``P n_0`` copies): small, and a bound that leaves work out stays a bound.
"""

import time

import numpy as np

PARTS = ("gemm", "activation", "update")


def _activation_pass(activation):
    """``g(z)`` in place by the vectorised ufunc, and the passes of ``δ ⊙ g'``."""
    import scipy.special  # SciPy is a dependency (Numba's BLAS); only the bound needs it here

    forward = {"sigmoid": lambda z: scipy.special.expit(z, out=z),
               "tanh": lambda z: np.tanh(z, out=z),
               "relu": lambda z: np.maximum(z, 0, out=z),
               "gelu": lambda z: scipy.special.erf(z, out=z)}[activation]

    def backward(delta, a, upstream):
        if activation == "gelu":  # g' needs exp(−z²/2) besides Φ(z)
            np.exp(a, out=a)
        # δ = upstream ⊙ g': the traffic of δ ⊙= g', without δ decaying to subnormals
        np.multiply(upstream, a, out=delta)

    return forward, backward


def _update_pass(case):
    """One optimizer step over the ``N`` parameters of ``case``, by the compiled fused loop."""
    from gpubp.kernels import cpu_update  # the loops fit's compiled epoch runs

    N = sum(n_in * n_out + n_out for n_in, n_out in zip(case.sizes[:-1], case.sizes[1:]))
    theta, grad = np.zeros(N, case.dtype), np.full(N, 1e-3, case.dtype)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    if case.optimizer in ("adam", "adamw"):
        shrink = 1 - case.lr * 0.01 if case.optimizer == "adamw" else 1.0
        return lambda: cpu_update._adam(theta, grad, m, v, (case.lr, 0.9, 0.1, 0.999, 1e-3,
                                                            1e-8, 0.1, 1e-3, 0.0, shrink))
    if case.optimizer == "momentum":
        return lambda: cpu_update._sgd(theta, grad, m, case.lr, 0.9, False, 0.0, True)
    biases = np.concatenate([np.zeros(n, theta.dtype) for n in case.sizes[1:]])
    return lambda: cpu_update._sgd(biases, biases, biases, case.lr, 0.0, False, 0.0, False)


def bound_runner(case, gemm, n_steps):
    """A zero-argument callable timing one epoch's bound of ``n_steps`` steps; it returns
    the bound's seconds and keeps the epoch's parts in its ``parts`` dict (``gemm``,
    ``activation``, ``update``, seconds; their sum is the return value). ``gemm`` is the
    ``gemm-only`` runner's epoch (:mod:`gpubp.bench.runners`)."""
    forward, backward = _activation_pass(case.activation)
    rng = np.random.default_rng(0)
    hidden = [(rng.standard_normal((case.batch_size, n)).astype(case.dtype),
               np.empty((case.batch_size, n), case.dtype),
               np.ones((case.batch_size, n), case.dtype)) for n in case.sizes[1:-1]]
    saved = [z.copy() for z, _, _ in hidden]
    step = _update_pass(case)

    def activation():
        for (z, _, _), s in zip(hidden, saved):
            z[...] = s  # the same inputs every epoch (not timed)
        t0 = time.perf_counter()
        for _ in range(n_steps):
            for z, delta, upstream in hidden:
                forward(z)
                backward(delta, z, upstream)
        return time.perf_counter() - t0

    def update():
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        return time.perf_counter() - t0

    def epoch():
        epoch.parts.update(gemm=gemm(), activation=activation(), update=update())
        return bound_seconds(epoch.parts)

    epoch.parts = {}
    return epoch


def bound_seconds(parts):
    """The bound: the sum of its parts' seconds."""
    return sum(parts[name] for name in PARTS)
