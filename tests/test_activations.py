"""The activations added with gelu (leaky_relu, elu, selu, softplus, gelu, gelu_tanh, silu):
their derivatives against central differences, the network's gradients against PyTorch's
autograd, every kernel target against the reference, overflow, the slope's and the
model files' round trips. (``tests/test_tables.py`` runs every row through every consumer
as well; ``tests/test_init.py`` checks the initial weights.)"""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpubp
from gpubp import activations
from gpubp.core import compiled
from gpubp.kernels import cpu as C
from gpubp.kernels import reference as R
from gpubp.optim.optimizers import SGD
from tests.conftest import randomize_biases

NEW = ("leaky_relu", "elu", "selu", "softplus", "gelu", "gelu_tanh", "silu")
DERIVED = [a.name for a in activations.ACTIVATIONS.values() if a.hidden]

# PyTorch's functional twin of each hidden activation (float64 tensors)
TORCH = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu, "identity": lambda z: z,
    "leaky_relu": lambda z, slope=0.01: F.leaky_relu(z, negative_slope=slope),
    "elu": F.elu, "selu": F.selu, "softplus": F.softplus,
    "gelu": lambda z: F.gelu(z, approximate="none"),
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"), "silu": F.silu,
}


def _g(z, name, slope=R.SLOPE):
    return R.activate(np.array(z, dtype=np.float64), name, slope)


def _g_prime(z, name, slope=R.SLOPE):
    """g'(z) as the kernels compute it: from a = g(z), or from z for FROM_Z."""
    source = z if name in R.FROM_Z else _g(z, name, slope)
    return R.activation_derivative(source, name, slope)


# a grid that keeps |z| >= 1e-3 away from the kinks at 0 (a central difference there is
# no derivative), with large values where saturation could lose the derivative
GRID = np.concatenate([-np.geomspace(30, 1e-3, 80), np.geomspace(1e-3, 30, 80)])


@pytest.mark.parametrize("slope", [0.01, 0.2])
@pytest.mark.parametrize("name", DERIVED)
def test_derivative_matches_central_differences(name, slope):
    h = 1e-6
    numeric = (_g(GRID + h, name, slope) - _g(GRID - h, name, slope)) / (2 * h)
    np.testing.assert_allclose(_g_prime(GRID, name, slope), numeric, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", DERIVED)
def test_values_and_derivatives_equal_pytorch(name):
    z = torch.tensor(np.concatenate([GRID, [-700.0, -40.0, 0.0, 40.0, 700.0]]),
                     dtype=torch.float64, requires_grad=True)
    a = TORCH[name](z)
    (grad,) = torch.autograd.grad(a.sum(), z)
    zn = z.detach().numpy()
    # softplus: PyTorch returns z itself above its threshold 20 (β = 1), ours is exact; they
    # differ by log1p(e^{-z}) < 2.1e-9 there, in value and in slope
    rtol = 1e-10 if name == "softplus" else 1e-13
    np.testing.assert_allclose(_g(zn, name), a.detach().numpy(), rtol=rtol, atol=1e-300)
    # g' from a (tanh's 1 − a², ...) is exact to an absolute rounding error: it loses the
    # relative precision of a g' near 0
    rtol = 1e-8 if name == "softplus" else 1e-13
    np.testing.assert_allclose(_g_prime(zn, name), grad.numpy(), rtol=rtol, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NEW)
def test_cpu_kernels_equal_the_reference(name, dtype):
    """Against the float64 reference (the float32 reference itself loses digits, in
    gelu_tanh's 1 + tanh u near −1): float32 arrays are computed in float32 arithmetic
    (kernels/cpu_math32.py), a few roundings of 2^-24 each, so 5 ulp of relative error."""
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(6, 5)) * 4).astype(dtype)
    b = rng.normal(size=5).astype(dtype)
    want, got = z.astype(np.float64), z.copy()
    kept_want, kept_got = np.empty_like(want), np.empty_like(z)
    R.bias_activation(want, b.astype(np.float64), name, 0.2, kept_want)
    C.bias_activation(got, b, name, 0.2, kept_got)
    tol = dict(rtol=1e-13, atol=1e-15) if dtype == np.float64 else dict(rtol=6e-7, atol=1e-8)
    np.testing.assert_allclose(got, want, **tol)
    np.testing.assert_array_equal(kept_got, (z + b))
    source = kept_got if name in R.FROM_Z else got
    delta = rng.normal(size=z.shape).astype(dtype)
    delta_want, delta_got = delta.astype(np.float64), delta.copy()
    R.hidden_delta(delta_want, source.astype(np.float64), name, 0.2)
    C.hidden_delta(delta_got, source, name, 0.2)
    np.testing.assert_allclose(delta_got, delta_want, **tol)


def _torch_gradients(net, X, Y, slope):
    """Cost and ∂C/∂W, ∂C/∂b of ``net`` (identity output, mse) by PyTorch's autograd."""
    W, b = net.get_params()
    Wt = [torch.tensor(w, requires_grad=True) for w in W]
    bt = [torch.tensor(v, requires_grad=True) for v in b]
    a = torch.tensor(X)
    for l, (w, v) in enumerate(zip(Wt, bt)):
        z = a @ w + v
        g = net.activation_names[l]
        a = TORCH[g](z, slope) if g == "leaky_relu" else TORCH[g](z)
    cost = 0.5 * ((a - torch.tensor(Y)) ** 2).sum(dim=1).mean()
    cost.backward()
    return float(cost.detach()), [w.grad.numpy() for w in Wt], [v.grad.numpy() for v in bt]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("name", NEW)
def test_network_gradients_equal_pytorch_autograd(name, backend):
    slope = 0.2 if name == "leaky_relu" else None
    net = randomize_biases(gpubp.Network([4, 6, 5, 3], hidden=[name, "tanh" if name == "silu"
                                                                else name],
                                         output="identity", dtype="float64", seed=1,
                                         backend=backend, negative_slope=slope))
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(11, 4)) * 2, rng.normal(size=(11, 3))
    cost, dW, db = _torch_gradients(net, X, Y, slope)
    ours_dW, ours_db = net.gradients(X, Y)
    assert net.loss(X, Y) == pytest.approx(cost, rel=1e-13)
    for ours, theirs in zip(ours_dW + ours_db, dW + db):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", NEW)
def test_an_epoch_is_the_same_on_reference_cpu_and_the_compiled_epoch(name):
    """Mixed layers (the kept z of a gelu layer between two others), SGD with momentum."""
    sizes, hidden = [4, 6, 5, 7, 3], [name, "gelu", name]
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(21, 4)), rng.normal(size=(21, 3))
    nets = [randomize_biases(gpubp.Network(sizes, hidden=hidden, output="identity",
                                           dtype="float64", seed=4, backend=backend))
            for backend in ("reference", "cpu", "cpu")]
    order = np.arange(21)
    fast = nets[2]
    optimizers = [SGD(lr=0.05, momentum=0.5) for _ in nets]
    assert compiled.supported(fast, optimizers[2])
    for net, opt in zip(nets[:2], optimizers):
        for start in range(0, 21, 8):
            net._train_step(opt, X, Y, order[start:start + 8])
    compiled.train_epoch(fast, optimizers[2], X, Y, order, 8)
    np.testing.assert_allclose(nets[1].theta, nets[0].theta, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fast.theta, nets[0].theta, rtol=1e-12, atol=1e-13)
    assert not np.allclose(fast.theta, randomize_biases(gpubp.Network(
        sizes, hidden=hidden, output="identity", dtype="float64", seed=4)).theta)


def test_only_the_layers_that_need_z_keep_it():
    net = gpubp.Network([3, 4, 5, 6, 2], hidden=["gelu", "relu", "silu"], output="identity",
                        seed=0)
    net.forward(np.ones((7, 3)))
    assert [z is None for z in net.zs] == [True, False, True, False, True]
    assert net._activations_flat.size == 7 * (3 + 4 + 5 + 6 + 2 + 4 + 6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("name", NEW)
def test_huge_inputs_neither_overflow_nor_warn(name, backend, dtype):
    """Warnings are errors: an overflow in exp, a cube or a square would fail here."""
    net = gpubp.Network([2, 3, 2], hidden=name, output="identity", dtype=dtype, seed=0,
                        backend=backend)
    big = np.finfo(dtype).max / 1e3
    X = np.array([[big, -big], [-big, big], [1e3, -1e3], [-800.0, 800.0]], dtype)
    out = net.forward(X)
    assert np.isfinite(out).all()
    dW, db = net.gradients(X[2:], np.zeros((2, 2)))
    assert all(np.isfinite(g).all() for g in dW + db)


def test_leaky_slope_reaches_every_kernel_and_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    net = randomize_biases(gpubp.Network([3, 5, 2], hidden="leaky_relu", output="identity",
                                         dtype="float64", seed=0, negative_slope=0.3))
    default = randomize_biases(gpubp.Network([3, 5, 2], hidden="leaky_relu", output="identity",
                                             dtype="float64", seed=0))
    assert (net.negative_slope, default.negative_slope) == (0.3, 0.01)
    assert not np.allclose(net.forward(X), default.forward(X))
    _, dW, db = _torch_gradients(net, X, Y, 0.3)
    np.testing.assert_allclose(net.gradients(X, Y)[0][0], dW[0], rtol=1e-10)
    net.save(tmp_path / "m.npz")
    loaded = gpubp.load(tmp_path / "m.npz")
    assert loaded.negative_slope == 0.3
    np.testing.assert_array_equal(loaded.forward(X), net.forward(X))
    copy = pickle.loads(pickle.dumps(net))
    assert copy.negative_slope == 0.3
    np.testing.assert_array_equal(copy.forward(X), net.forward(X))


@pytest.mark.parametrize("name", ["gelu", "selu", "silu"])
def test_saved_and_pickled_networks_keep_the_activation(tmp_path, name):
    net = randomize_biases(gpubp.Network([3, 4, 2], hidden=name, output="identity", seed=0))
    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    net.save(tmp_path / "m.npz")
    for other in (gpubp.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(net))):
        assert other.hidden == [name] and other.negative_slope is None
        np.testing.assert_array_equal(other.forward(X), net.forward(X))


@pytest.mark.parametrize("slope, error, match", [
    (-0.1, ValueError, r"negative_slope must be finite and >= 0, got -0.1"),
    (float("nan"), ValueError, r"negative_slope must be finite"),
    ("0.1", TypeError, r"negative_slope must be a real number >= 0, got '0.1'"),
    (True, TypeError, r"negative_slope must be a real number"),
])
def test_bad_negative_slope_is_refused(slope, error, match):
    with pytest.raises(error, match=match):
        gpubp.Network([2, 3, 1], hidden="leaky_relu", negative_slope=slope)


def test_negative_slope_without_a_leaky_layer_is_refused():
    with pytest.raises(ValueError, match=r"negative_slope applies to leaky_relu layers only"):
        gpubp.Network([2, 3, 1], hidden="relu", negative_slope=0.1)
    assert gpubp.Network([2, 3, 1], hidden="relu").negative_slope is None


def test_names_people_type_are_suggested():
    with pytest.raises(ValueError, match=r"did you mean 'silu'"):
        gpubp.Network([2, 3, 1], hidden="swish")
    with pytest.raises(ValueError, match=r"did you mean 'leaky_relu'"):
        gpubp.Network([2, 3, 1], hidden="leakyrelu")
    with pytest.raises(ValueError, match=r"output must be one of .*got 'gelu'"):
        gpubp.Network([2, 1], output="gelu")  # hidden layers only


def test_gradcheck_passes_with_kinked_and_smooth_new_activations():
    net = gpubp.Network([3, 4, 4, 4, 2], hidden=["leaky_relu", "selu", "gelu_tanh"],
                        output="softmax", dtype="float64", seed=0, negative_slope=0.1)
    rng = np.random.default_rng(0)
    errors = gpubp.gradcheck(net, rng.normal(size=(6, 3)), rng.integers(0, 2, 6))
    assert (np.asarray(errors) <= 1).all(), errors


def test_cuda_kernels_and_backend_in_the_simulator():
    from tests.test_cuda_kernels import TESTS, run_simulated

    run_simulated(TESTS / "cudasim_activations.py", timeout=900)


def test_cli_takes_the_new_names_and_the_slope(capsys):
    from gpubp.cli.commands import main

    assert main(["gradcheck", "--layers", "4", "--hidden", "leaky_relu", "--negative-slope",
                 "0.2", "--backend", "cpu"]) == 0, capsys.readouterr().err
    assert "ok:" in capsys.readouterr().out
    assert main(["gradcheck", "--layers", "4", "--hidden", "relu", "--negative-slope",
                 "0.2"]) == 1
    assert "--negative-slope applies to --hidden leaky_relu" in capsys.readouterr().err
    assert main(["train", "--data", "iris", "--layers", "8", "--hidden", "gelu", "--epochs",
                 "2", "--verbose", "0"]) == 0, capsys.readouterr().err
    assert "hidden=gelu" in capsys.readouterr().out


def test_resume_needs_the_same_slope_and_load_takes_it_from_the_file(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)

    def net(slope):
        return gpubp.Network([3, 4, 2], hidden="leaky_relu", seed=0, negative_slope=slope)

    net(0.2).fit(X, y, epochs=1, verbose=0, checkpoint=tmp_path / "c.npz")
    net(0.2).fit(X, y, epochs=2, verbose=0, resume=tmp_path / "c.npz")
    with pytest.raises(ValueError, match=r"negative_slope must match the checkpoint's \(0.2\)"):
        net(0.3).fit(X, y, epochs=2, verbose=0, resume=tmp_path / "c.npz")
    net(0.2).save(tmp_path / "m.npz")
    for key in ("negative_slope", "init"):
        with pytest.raises(TypeError, match=rf"unexpected keyword argument '{key}'.*file"):
            gpubp.load(tmp_path / "m.npz", **{key: 0.1})
