"""Full-batch L-BFGS over the flat parameter vector (gpubp.optim.lbfgs)."""

import numpy as np
import pytest

import gpubp
from gpubp.optim import lbfgs

from tests.conftest import make_problem, randomize_biases


def _net(backend, output="softmax", sizes=(4, 6, 3)):
    return randomize_biases(gpubp.Network(list(sizes), hidden="tanh", output=output,
                                          backend=backend, dtype="float64", seed=0))


@pytest.mark.parametrize("weighted", [False, True])
def test_objective_gradient_matches_central_differences(backend, weighted):
    net = _net(backend)
    X, Y = make_problem(net.sizes, "cross_entropy", 11)
    s = np.random.default_rng(1).uniform(0.2, 2, 11) if weighted else None
    f = lbfgs.objective(net, X, Y, sample_weight=s, alpha=0.3)
    theta = net.theta.copy()
    cost, grad = f(theta)
    eps = 1e-6
    numeric = np.array([(f(theta + eps * e)[0] - f(theta - eps * e)[0]) / (2 * eps)
                        for e in np.eye(theta.size)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    # the penalty is alpha/2 |W|^2 / n on the weights only, n the total weight
    n = 11 if s is None else s.sum()
    W = np.concatenate([w.ravel() for w in net.get_params()[0]])
    net.theta[:] = theta
    assert cost == pytest.approx(net.loss(X, Y, sample_weight=s) + 0.15 * (W @ W) / n, rel=1e-12)


def test_minimize_converges_and_leaves_the_solution_in_theta(backend):
    net = _net(backend, output="identity", sizes=(3, 8, 2))
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 3))
    Y = np.column_stack([np.sin(2 * X[:, 0]), X[:, 1] * X[:, 2]])
    before = net.loss(X, Y)
    result = lbfgs.minimize(net, X, Y, alpha=1e-3, max_iter=2000, tol=1e-4)
    assert result.status == 0 and result.nit > 5
    np.testing.assert_array_equal(net.theta, result.x)
    assert net.loss(X, Y) < 0.01 * before
    _, grad = lbfgs.objective(net, X, Y, alpha=1e-3)(net.theta.copy())
    assert np.abs(grad).max() <= 1e-4  # SciPy's gtol: the largest gradient entry


def test_limits_are_scipy_s(backend):
    net = _net(backend)
    X, Y = make_problem(net.sizes, "cross_entropy", 30)
    result = lbfgs.minimize(net, X, Y, max_iter=3, tol=0.0)
    assert result.status == 1 and result.nit == 3
    result = lbfgs.minimize(_net(backend), X, Y, max_fun=4, tol=0.0)
    assert result.status == 1 and result.nfev <= 6


def test_sparse_and_float32(backend):
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 4)) * (rng.random((40, 4)) < 0.5)
    Y = np.eye(3)[rng.integers(0, 3, 40)]
    dense = lbfgs.minimize(_net(backend), X, Y, max_iter=20)
    sparse = lbfgs.minimize(_net(backend), sp.csc_matrix(X), Y, max_iter=20)
    np.testing.assert_allclose(sparse.x, dense.x, rtol=1e-7, atol=1e-9)
    net32 = gpubp.Network([4, 6, 3], hidden="tanh", backend=backend, dtype="float32", seed=0)
    result = lbfgs.minimize(net32, X, Y, max_iter=20)
    assert net32.theta.dtype == np.float32 and result.fun < net32.loss(X, Y) + 1e-3


def test_bad_arguments():
    net = _net("reference")
    X, Y = make_problem(net.sizes, "cross_entropy", 5)
    with pytest.raises(ValueError, match="max_fun"):
        lbfgs.minimize(net, X, Y, max_fun=0)
    with pytest.raises(ValueError, match="alpha"):
        lbfgs.minimize(net, X, Y, alpha=-1.0)
