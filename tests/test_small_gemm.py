"""Loop nests for small layers' products (gpubp.kernels.cpu_small_gemm) and the choice
between them and BLAS (gpubp.core.gemm_choice): equal to ``np.dot`` within rounding (not
bit for bit: the sums run in another order), chosen once per layer shape, honoured."""

import numpy as np
import pytest
from tests.conftest import make_problem

import gpubp
from gpubp.core import compiled, gemm_choice
from gpubp.kernels import cpu_epoch, cpu_small_gemm
from gpubp.optim.optimizers import SGD, Adam

TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-5)}
SHAPES = [(1, 1, 1), (3, 7, 1), (32, 64, 10), (5, 1, 9), (17, 33, 65)]  # P, n_in, n_out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("P,n_in,n_out", SHAPES)
def test_loop_nests_equal_blas_within_rounding(P, n_in, n_out, dtype):
    rng = np.random.default_rng(P + n_in + n_out)
    a = rng.standard_normal((P, n_in)).astype(dtype)
    delta = rng.standard_normal((P, n_out)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    z = np.full((P, n_out), np.nan, dtype)  # every entry written, none read
    cpu_small_gemm.mm(a, W, z)
    np.testing.assert_allclose(z, a @ W, **TOL[dtype])
    back = np.full((P, n_in), np.nan, dtype)
    cpu_small_gemm.mm_nt(delta, W, back)
    np.testing.assert_allclose(back, delta @ W.T, **TOL[dtype])
    grad = np.full((n_in, n_out), np.nan, dtype)
    cpu_small_gemm.mm_tn(a, delta, grad, np.array([1, 0], dtype))  # beta 0: never read
    np.testing.assert_allclose(grad, a.T @ delta, **TOL[dtype])
    for alpha, beta in ((-0.1, 1.0), (-0.1, 0.99)):  # SGD's step, without and with decay
        stepped = W.copy()
        cpu_small_gemm.mm_tn(a, delta, stepped, np.array([alpha, beta], dtype))
        np.testing.assert_allclose(stepped, beta * W + alpha * (a.T @ delta), **TOL[dtype])


def _trained(opt, dtype, forced, monkeypatch, seen=None):
    """Two epochs of a 6-5-3 network with every layer's choice ``forced``; the
    ``Layout.loops`` of every compiled call go to ``seen``."""
    monkeypatch.setattr(gemm_choice, "_choices", {})
    monkeypatch.setattr(gemm_choice, "measure", lambda *key: (forced, 1.0, 2.0))
    original = cpu_epoch.train_epoch
    monkeypatch.setattr(cpu_epoch, "train_epoch", lambda batches, buffers, layout, *rest: (
        seen is not None and seen.append(layout.loops.tolist()),
        original(batches, buffers, layout, *rest))[1])
    net = gpubp.Network([6, 5, 3], hidden="tanh", backend="cpu", dtype=dtype, seed=1)
    X, Y = make_problem([6, 5, 3], "cross_entropy", 40, seed=2)
    order = np.random.default_rng(3).permutation(40)
    for _ in range(2):
        compiled.train_epoch(net, opt, X.astype(dtype), Y.astype(dtype), order, 8)
    return net


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1, weight_decay=0.01),
                                  lambda: Adam(lr=0.01)], ids=["sgd-fused", "adam"])
def test_the_forced_choice_is_honoured_and_trains_as_blas_does(make, dtype, monkeypatch):
    seen = []
    by_loops = _trained(make(), dtype, True, monkeypatch, seen)
    assert seen and all(loops == [1, 1] for loops in seen)
    by_blas = _trained(make(), dtype, False, monkeypatch)
    np.testing.assert_allclose(by_loops.theta, by_blas.theta, **TOL[dtype])
    np.testing.assert_allclose(by_loops.nabla_theta, by_blas.nabla_theta, **TOL[dtype])
    if dtype == "float64" and isinstance(make(), SGD):
        # the loops ran: the fused step rounds as alpha (a δ) summed, BLAS as alpha Σ a δ
        assert not np.array_equal(by_loops.theta, by_blas.theta)


def test_each_layer_shape_is_measured_once_per_run(monkeypatch):
    monkeypatch.setattr(gemm_choice, "_choices", {})
    measured = []
    real = gemm_choice.measure
    monkeypatch.setattr(gemm_choice, "measure",
                        lambda *key: measured.append(key) or real(*key))
    first = gemm_choice.loops([64, 64, 10], 32, "float32")
    again = gemm_choice.loops([64, 64, 10], 32, np.float32)
    gemm_choice.loops([64, 10], 32, "float32")  # a shape already measured
    assert measured == [(64, 64, 32, "float32"), (64, 10, 32, "float32")]
    assert first.dtype == np.int64 and first.tolist() == again.tolist()
    choice = gemm_choice.choices()[(64, 64, 32, "float32")]
    assert first[0] == choice[0] and choice[1] > 0 and choice[2] > 0
    assert choice[0] == (choice[1] < choice[2])  # the faster of the two


def test_a_large_layer_takes_blas_without_measuring(monkeypatch):
    monkeypatch.setattr(gemm_choice, "_choices", {})
    loops, by_loops, by_blas = gemm_choice.measure(784, 1024, 256, "float32")
    assert not loops and np.isnan(by_loops) and np.isnan(by_blas)
    assert gemm_choice.loops([784, 1024], 256, "float32").tolist() == [0]


@pytest.mark.parametrize("loops", [False, True])
def test_fused_sgd_equals_the_unfused_step_with_either_choice(loops, monkeypatch):
    """Plain SGD's fused step must not change a bit where an epoch is cut into chunks (the
    chunk's last step is unfused), whichever products the layer's measurement chose."""
    monkeypatch.setattr(gemm_choice, "_choices", {
        (4, 6, 8, "float64"): (loops, 0.0, 0.0), (6, 3, 8, "float64"): (loops, 0.0, 0.0)})
    X, Y = make_problem([4, 6, 3], "cross_entropy", 80, seed=4)
    runs = []
    for every in (None, 3):  # one call per epoch, or a compiled call per 3 batches

        class Every(gpubp.training.callbacks.Callback):
            batch_every = every or 1

            def on_batch_end(self, run, batch, logs):
                pass

        net = gpubp.Network([4, 6, 3], hidden="tanh", dtype="float64", seed=1, backend="cpu")
        net.fit(X, Y, epochs=2, batch_size=8, lr=0.5, verbose=0,
                optimizer=SGD(lr=0.5),  # (with a decay, BLAS's β W differs in the last bit)
                callbacks=[Every()] if every else None)
        runs.append(net.theta.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
