"""Shared fixtures: the CPU backends every test compares, and small random problems."""

import numpy as np
import pytest

CPU_BACKENDS = ("reference", "cpu")

# (hidden, output, loss): every accepted pairing of the derivation
PAIRINGS = [
    ("sigmoid", "softmax", "cross_entropy"),
    ("tanh", "softmax", "cross_entropy"),
    ("relu", "softmax", "cross_entropy"),
    ("identity", "softmax", "cross_entropy"),
    ("sigmoid", "sigmoid", "binary_cross_entropy"),
    ("tanh", "sigmoid", "binary_cross_entropy"),
    ("relu", "sigmoid", "binary_cross_entropy"),
    ("sigmoid", "sigmoid", "mse"),
    ("tanh", "tanh", "mse"),
    ("relu", "identity", "mse"),
    ("sigmoid", "relu", "mse"),
    ("identity", "identity", "mse"),
]


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    return request.param


def make_targets(rng, P, n_out, loss):
    """Random valid targets for ``loss``: one-hot rows, 0/1 entries, or real values."""
    if loss == "cross_entropy":
        return np.eye(n_out)[rng.integers(0, n_out, P)]
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (P, n_out)).astype(float)
    return rng.normal(size=(P, n_out))


def make_problem(sizes, loss, P, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(P, sizes[0])), make_targets(rng, P, sizes[-1], loss)


def randomize_biases(net, seed=0):
    """Give ``net`` non-zero biases: zero biases hide bias bugs and, with relu, put units
    whose inputs are all dead exactly on the kink z = 0, where no derivative exists."""
    rng = np.random.default_rng(seed)
    W, b = net.get_params()
    net.set_params(W, [rng.normal(0, 0.5, v.shape) for v in b])
    return net


# Hypothesis draws new examples on every run by default; CI runs the derandomised profile
# so that a red build always reproduces.
# hypothesis is a test dependency, but a GPU machine running only the gpu-marked tests
# (benchmarks/gpu_check.py) may not have it: the files that use it import it themselves.
try:
    from hypothesis import settings as _hypothesis_settings  # noqa: E402
except ImportError:
    _hypothesis_settings = None
if _hypothesis_settings is not None:
    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    if __import__("os").environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
