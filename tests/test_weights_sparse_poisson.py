"""Core features behind the scikit-learn drop-in, on every CPU backend: per-example weights,
SciPy sparse inputs, several sigmoid outputs (multilabel), and the Poisson loss with its
exponential output. Gradients against central differences; kernels against their NumPy
twins; the CUDA kernels under the simulator in ``tests/cudasim_core_features.py``."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import gpubp
from gpubp.kernels import cpu as cpu_kernels
from gpubp.kernels import reference

from tests.conftest import make_problem, randomize_biases

TESTS = Path(__file__).parent

# (hidden, output, loss) of the features: Poisson, multilabel (several sigmoid + BCE), and
# the softmax and regression pairings the weights and sparse inputs must not disturb
CASES = [("tanh", "exp", "poisson"), ("sigmoid", "sigmoid", "binary_cross_entropy"),
         ("relu", "softmax", "cross_entropy"), ("tanh", "identity", "mse")]


def poisson_problem(sizes, P, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, sizes[0]))
    return X, rng.poisson(2.0, size=(P, sizes[-1])).astype(float)


def problem(sizes, loss, P, seed=0):
    return poisson_problem(sizes, P, seed) if loss == "poisson" else make_problem(sizes, loss, P, seed)


def net_for(hidden, output, loss, backend, sizes=(5, 4, 3), dtype="float64"):
    net = gpubp.Network(list(sizes), hidden=hidden, output=output, loss=loss, backend=backend,
                        dtype=dtype, seed=1)
    return randomize_biases(net)


def central_differences(net, X, Y, sample_weight=None, eps=1e-6):
    """``∂C/∂θ`` by central differences over every entry of ``theta``."""
    theta = net.theta
    saved = theta.copy()
    grad = np.zeros_like(saved)
    for k in range(saved.size):
        theta[k] = saved[k] + eps
        plus = net.loss(X, Y, sample_weight=sample_weight)
        theta[k] = saved[k] - eps
        minus = net.loss(X, Y, sample_weight=sample_weight)
        theta[k] = saved[k]
        grad[k] = (plus - minus) / (2 * eps)
    return grad


def flat(dW, db):
    return np.concatenate([np.concatenate([w.ravel(), b]) for w, b in zip(dW, db)])


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden, output, loss", CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_gradient_matches_central_differences(backend, hidden, output, loss, weighted, sparse):
    net = net_for(hidden, output, loss, backend)
    X, Y = problem(net.sizes, loss, P=9)
    if sparse:
        X[np.abs(X) < 0.7] = 0  # about half the entries
        X = sp.csr_matrix(X)
    s = np.random.default_rng(3).uniform(0.1, 3.0, 9) if weighted else None
    analytic = flat(*net.gradients(X, Y, sample_weight=s))
    numeric = central_differences(net, X, Y, s)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("hidden, output, loss", CASES)
def test_integer_weights_equal_repeated_rows(backend, hidden, output, loss):
    net = net_for(hidden, output, loss, backend)
    X, Y = problem(net.sizes, loss, P=7)
    counts = np.array([1, 3, 0, 2, 1, 1, 4])
    rep_X, rep_Y = np.repeat(X, counts, axis=0), np.repeat(Y, counts, axis=0)
    assert net.loss(X, Y, sample_weight=counts) == pytest.approx(net.loss(rep_X, rep_Y), rel=1e-12)
    for got, want in zip(net.gradients(X, Y, sample_weight=counts), net.gradients(rep_X, rep_Y)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-14)


def test_weighted_cost_is_the_weighted_mean_of_example_costs(backend):
    net = net_for("tanh", "exp", "poisson", backend)
    X, Y = poisson_problem(net.sizes, 6)
    s = np.array([0.5, 2.0, 1.0, 0.0, 3.0, 1.5])
    costs = reference.example_costs(net.forward(X), Y, "poisson")
    assert net.loss(X, Y, sample_weight=s) == pytest.approx((s * costs).sum() / s.sum(), rel=1e-12)


def test_weighted_rows_across_chunks(backend, monkeypatch):
    # _cost_and_gradients works in chunks; each chunk's weighted mean is reweighted by its
    # share of the total weight
    import gpubp.core.network as network_module

    net = net_for("relu", "softmax", "cross_entropy", backend)
    X, Y = make_problem(net.sizes, "cross_entropy", 23)
    s = np.random.default_rng(0).uniform(0, 2, 23)
    whole = net.gradients(X, Y, sample_weight=s)
    monkeypatch.setattr(network_module, "CHUNK", 4)
    fresh = net_for("relu", "softmax", "cross_entropy", backend)
    for got, want in zip(fresh.gradients(X, Y, sample_weight=s), whole):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weights, match", [
    (np.ones(3), r"sample_weight must have shape \(4,\), one weight per example, got \(3,\)"),
    (np.array([1.0, -1.0, 1.0, 1.0]), r"sample_weight must hold finite values >= 0"),
    (np.array([1.0, np.nan, 1.0, 1.0]), r"sample_weight must hold finite values >= 0"),
    (np.zeros(4), r"sample_weight must have a positive sum, got 0.0"),
])
def test_bad_sample_weight(weights, match):
    net = gpubp.Network([2, 3], output="identity", seed=0)
    with pytest.raises(ValueError, match=match):
        net.loss(np.zeros((4, 2)), np.zeros((4, 3)), sample_weight=weights)


# -- sparse inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_equals_dense(backend, fmt):
    net = net_for("sigmoid", "softmax", "cross_entropy", backend, sizes=(12, 6, 3))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 12)) * (rng.random((40, 12)) < 0.2)
    Y = np.eye(3)[rng.integers(0, 3, 40)]
    Xs = sp.csr_matrix(X) if fmt == "csr" else sp.csc_array(X)
    np.testing.assert_allclose(net.forward(Xs), net.forward(X), rtol=1e-12)
    assert net.loss(Xs, Y) == pytest.approx(net.loss(X, Y), rel=1e-12)
    twin = net_for("sigmoid", "softmax", "cross_entropy", backend, sizes=(12, 6, 3))
    h_dense = net.fit(X, Y, epochs=3, batch_size=8, verbose=0, lr=0.5)
    h_sparse = twin.fit(Xs, Y, epochs=3, batch_size=8, verbose=0, lr=0.5)
    np.testing.assert_allclose(h_sparse["loss"], h_dense["loss"], rtol=1e-10)
    np.testing.assert_allclose(twin.theta, net.theta, rtol=1e-10, atol=1e-13)


def test_sparse_first_layer_gradient_stays_sparse(backend):
    # the weight gradient of the first layer is a sparse-transpose x dense product: rows of
    # W^1 whose input column is all zero get an exactly zero gradient
    net = net_for("tanh", "identity", "mse", backend, sizes=(6, 4, 2))
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 6))
    X[:, [1, 4]] = 0
    dW, _ = net.gradients(sp.csr_matrix(X), rng.normal(size=(10, 2)))
    assert not dW[0][[1, 4]].any() and dW[0][[0, 2, 3, 5]].all()


def test_bad_sparse_input():
    net = gpubp.Network([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"X must have shape \(P >= 1, 3\), got \(2, 4\)"):
        net.forward(sp.csr_matrix(np.ones((2, 4))))
    with pytest.raises(ValueError, match="X must be finite"):
        net.forward(sp.csr_matrix(np.array([[1.0, np.inf, 0.0]])))


# -- Poisson and the exponential output ---------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_and_poisson_kernels_match_the_reference(dtype):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(17, 5)).astype(dtype)
    z[0, 0] = 1e4  # capped: a finite rate, and no overflow warning (warnings are errors)
    b = rng.normal(size=5).astype(dtype)
    a_ref, a_cpu = z.copy(), z.copy()
    reference.bias_activation(a_ref, b, "exp")
    cpu_kernels.bias_activation(a_cpu, b, "exp")
    assert np.isfinite(a_ref).all()
    np.testing.assert_allclose(a_cpu, a_ref, rtol=1e-6 if dtype == "float32" else 1e-14)
    y = rng.poisson(1.5, size=a_ref.shape).astype(dtype)
    d_ref, d_cpu = np.empty_like(a_ref), np.empty_like(a_ref)
    a_small = np.exp(rng.normal(size=a_ref.shape)).astype(dtype)
    c_ref = reference.output_delta(a_small, y, "exp", "poisson", d_ref)
    c_cpu = cpu_kernels.output_delta(a_small, y, "exp", "poisson", d_cpu)
    np.testing.assert_allclose(d_cpu, d_ref, rtol=1e-6 if dtype == "float32" else 1e-14)
    np.testing.assert_allclose(d_ref, (a_small - y) / len(y), rtol=1e-6)
    assert c_cpu == pytest.approx(c_ref, rel=1e-5 if dtype == "float32" else 1e-12)


def test_poisson_cost_is_half_the_deviance():
    a = np.array([[2.0, 0.5], [1.0, 3.0]])
    y = np.array([[2.0, 0.0], [4.0, 1.0]])
    want = [0 + 0.5, 4 * np.log(4.0) - 4 + 1 + np.log(1 / 3.0) - 1 + 3]
    np.testing.assert_allclose(reference.example_costs(a, y, "poisson"), want, rtol=1e-14)


def test_poisson_pairing_rules():
    assert gpubp.Network([2, 3], output="exp", seed=0).loss_name == "poisson"
    with pytest.raises(ValueError, match="loss='poisson' needs output='exp'"):
        gpubp.Network([2, 3], output="identity", loss="poisson")
    with pytest.raises(ValueError, match="output='exp' needs loss='poisson'"):
        gpubp.Network([2, 3], output="exp", loss="mse")
    with pytest.raises(ValueError, match=r"hidden must be one of .*got 'exp'"):
        gpubp.Network([2, 3, 1], hidden="exp")
    net = gpubp.Network([2, 3], output="exp", seed=0)
    assert not net.is_classifier
    with pytest.raises(ValueError, match=r"Y must hold values >= 0 for loss='poisson'"):
        net.loss(np.zeros((2, 2)), -np.ones((2, 3)))
    for kernels in (reference, cpu_kernels):
        with pytest.raises(ValueError, match="go together"):
            kernels.output_delta(np.ones((2, 3)), np.ones((2, 3)), "identity", "poisson",
                                 np.empty((2, 3)))


def test_poisson_network_learns_a_rate(backend):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(400, 2))
    Y = rng.poisson(np.exp(0.5 + X[:, :1] - 0.5 * X[:, 1:])).astype(float)
    net = gpubp.Network([2, 8, 1], hidden="tanh", output="exp", backend=backend,
                        dtype="float64", seed=0)
    history = net.fit(X, Y, epochs=60, batch_size=32, optimizer="adam", lr=0.01, verbose=0)
    assert history["loss"][-1] < 0.8 * history["loss"][0]


# -- CUDA under the simulator ---------------------------------------------------------------------
def test_core_features_on_the_simulated_device():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TESTS / "cudasim_core_features.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulated cases failed:\n{tail}"
    assert re.search(r"\d+ passed", proc.stdout) and "skipped" not in proc.stdout, tail
