"""Every term of the sum (gpubp.core.per_example): per-example gradients and their norms,
input gradients and Jacobians, against PyTorch (torch.func.vmap of torch.func.grad, and
torch.autograd.functional.jacobian) in float64, and against central differences."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.func import grad, vmap

import gpubp
from gpubp import activations

TESTS = Path(__file__).parent
TORCH_G = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "identity": lambda z: z, "exp": torch.exp,
           "softmax": lambda z: torch.softmax(z, dim=-1),
           "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01),
           "elu": torch.nn.functional.elu, "selu": torch.nn.functional.selu,
           "softplus": torch.nn.functional.softplus, "silu": torch.nn.functional.silu,
           "gelu": lambda z: torch.nn.functional.gelu(z, approximate="none"),
           "gelu_tanh": lambda z: torch.nn.functional.gelu(z, approximate="tanh")}
# (output, loss): every loss, and mse with every output whose g' comes from a
CASES = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"),
         ("exp", "poisson")] + [(g, "mse") for g in activations.OUTPUT
                                if g in activations.FROM_OUTPUT]


def torch_cost(a, y, loss):
    """Example p's own cost c(a_p, y_p), as gpubp.losses defines it."""
    if loss == "mse":
        return 0.5 * ((a - y) ** 2).sum()
    if loss == "binary_cross_entropy":
        return -(y * torch.log(a) + (1 - y) * torch.log1p(-a)).sum()
    if loss == "cross_entropy":
        return -(y * torch.log(a)).sum()
    return (torch.where(y > 0, y * torch.log(torch.where(y > 0, y, 1.0) / a), 0.0)
            - y + a).sum()


def torch_forward(params, x, net):
    a = x
    for l, g in enumerate(net.activation_names):
        a = TORCH_G[g](a @ params[2 * l] + params[2 * l + 1])
    return a


def targets(rng, net, P):
    if net.loss_name == "cross_entropy":
        return rng.integers(0, net.sizes[-1], P)
    if net.loss_name == "binary_cross_entropy":
        return (rng.random((P, net.sizes[-1])) > 0.5).astype(float)
    if net.loss_name == "poisson":
        return rng.poisson(1.0, (P, net.sizes[-1])).astype(float)
    return rng.normal(size=(P, net.sizes[-1]))


def make(hidden, output, loss, backend="cpu", seed=0, P=7):
    net = gpubp.Network([4, 5, 3, 3], hidden=hidden, output=output, loss=loss,
                        dtype="float64", seed=seed, backend=backend)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, 4))
    Y = targets(rng, net, P)
    W, b = net.get_params()  # nonzero biases, so that the bias terms are tested too
    net.set_params(W, [rng.normal(scale=0.3, size=v.shape) for v in b])
    return net, X, Y


def torch_per_example(net, X, Y):
    """(P, N) per-example gradients laid out as theta, by torch.func.vmap(grad)."""
    W, b = net.get_params()
    params = [torch.tensor(p) for pair in zip(W, b) for p in pair]
    Yt = torch.tensor(net._check_XY(X, Y)[1])

    def cost(params, x, y):
        return torch_cost(torch_forward(params, x[None], net)[0], y, net.loss_name)

    grads = vmap(grad(cost), in_dims=(None, 0, 0))(params, torch.tensor(X), Yt)
    return torch.cat([g.reshape(len(X), -1) for g in grads], dim=1).numpy()


@pytest.mark.parametrize("hidden", activations.HIDDEN)
@pytest.mark.parametrize("output,loss", CASES)
def test_per_example_gradients_match_torch_vmap(hidden, output, loss):
    net, X, Y = make(hidden, output, loss)
    expected = torch_per_example(net, X, Y)
    G = net.per_example_gradients(X, Y)
    np.testing.assert_allclose(G, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(net.per_example_gradient_norms(X, Y),
                               np.linalg.norm(expected, axis=1), rtol=1e-10, atol=1e-12)
    per_layer = net.per_example_gradient_norms(X, Y, per_layer=True)
    blocks = [np.linalg.norm(expected[:, s], axis=1) for s in net.layer_slices]
    np.testing.assert_allclose(per_layer, np.stack(blocks, axis=1), rtol=1e-10, atol=1e-12)
    # the mean of the terms is the gradient of the mean cost
    dW, db = net.gradients(X, Y)
    flat = np.concatenate([p.ravel() for pair in zip(dW, db) for p in pair])
    np.testing.assert_allclose(G.mean(axis=0), flat, rtol=0, atol=1e-12)


def test_per_example_gradients_match_central_differences():
    net, X, Y = make("tanh", "softmax", "cross_entropy")
    G = net.per_example_gradients(X, Y)
    theta, h = net.backend.to_host(net.theta), 1e-6
    for p in (0, 3):
        for i in range(0, theta.size, 5):
            costs = []
            for sign in (1, -1):
                shifted = theta.copy()
                shifted[i] += sign * h
                net.backend.to_device(shifted, out=net.theta)
                costs.append(net.loss(X[p:p + 1], Y[p:p + 1]))  # example p's own cost
            net.backend.to_device(theta, out=net.theta)
            assert abs((costs[0] - costs[1]) / (2 * h) - G[p, i]) < 1e-7, (p, i)


@pytest.mark.parametrize("output,loss", CASES)
def test_input_gradients_and_jacobian_match_torch(output, loss):
    net, X, Y = make("sigmoid", output, loss)
    W, b = net.get_params()
    params = [torch.tensor(p) for pair in zip(W, b) for p in pair]
    Yt = torch.tensor(net._check_XY(X, Y)[1])
    grads = net.input_gradients(X, Y)
    J = net.jacobian(X)
    assert grads.shape == (7, 4) and J.shape == (7, 3, 4)
    for p in range(len(X)):
        x = torch.tensor(X[p])
        expected = torch.autograd.functional.jacobian(
            lambda x: torch_cost(torch_forward(params, x[None], net)[0], Yt[p], loss), x)
        np.testing.assert_allclose(grads[p], expected.numpy(), rtol=0, atol=1e-10)
        expected = torch.autograd.functional.jacobian(
            lambda x: torch_forward(params, x[None], net)[0], x)
        np.testing.assert_allclose(J[p], expected.numpy(), rtol=0, atol=1e-10)


def test_backends_and_sparse_inputs_agree():
    net, X, Y = make("relu", "softmax", "cross_entropy", backend="reference")
    ref = (net.per_example_gradients(X, Y), net.per_example_gradient_norms(X, Y, True))
    for backend in ("cpu",):
        other, _, _ = make("relu", "softmax", "cross_entropy", backend=backend)
        np.testing.assert_allclose(other.per_example_gradients(X, Y), ref[0], atol=1e-13)
    X[X < 0.3] = 0  # a sparse a^0: its row norms from the sparse rows
    dense = (net.per_example_gradients(X, Y), net.per_example_gradient_norms(X, Y, True))
    sparse = (net.per_example_gradients(sp.csr_matrix(X), Y),
              net.per_example_gradient_norms(sp.csr_matrix(X), Y, True))
    for d, s in zip(dense, sparse):
        np.testing.assert_allclose(s, d, atol=1e-13)


def test_chunks_of_a_large_input_are_rows_of_the_whole():
    net, X, Y = make("tanh", "sigmoid", "binary_cross_entropy", P=2500)
    whole = net.per_example_gradient_norms(X, Y)
    np.testing.assert_allclose(whole[2400:], net.per_example_gradient_norms(X[2400:], Y[2400:]),
                               rtol=1e-12)


def test_hidden_activations_are_the_forward_pass():
    net, X, _ = make("tanh", "softmax", "cross_entropy")
    hidden = net.hidden_activations(X)
    assert [h.shape for h in hidden] == [(7, 5), (7, 3)]
    trace = net.trace(X, np.zeros(7, int))
    for h, a in zip(hidden, trace.a[1:-1]):
        np.testing.assert_allclose(h, a, rtol=0, atol=1e-15)


def test_too_large_a_result_is_refused_with_its_size():
    net, X, Y = make("tanh", "softmax", "cross_entropy")
    need = 7 * net.theta.size * 8
    with pytest.raises(ValueError, match=rf"7 examples x {net.theta.size} parameters .*"
                                         r"max_bytes=100 .*per_example_gradient_norms"):
        net.per_example_gradients(X, Y, max_bytes=100)
    assert net.per_example_gradients(X, Y, max_bytes=need).shape == (7, net.theta.size)
    with pytest.raises(TypeError, match="per_layer must be True or False, got 'yes'"):
        net.per_example_gradient_norms(X, Y, per_layer="yes")


def test_per_example_figures_and_private_steps_on_the_simulated_device():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TESTS / "cudasim_per_example.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulated cases failed:\n{tail}"
    assert re.search(r"\d+ passed", proc.stdout) and "skipped" not in proc.stdout, tail
