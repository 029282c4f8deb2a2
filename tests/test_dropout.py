"""Dropout: the masks, their gradients, training on every target, resuming, files, errors.

The oracles: central differences and PyTorch autograd given the same fixed mask (float64);
the reference backend for the CPU loops, the compiled epoch and (in the simulator,
``tests/cudasim_dropout.py``) the CUDA kernels; one fit step against ``θ − η ∇C`` with the
masks :meth:`Network.trace` shows for that step.
"""

import pickle

import numpy as np
import pytest
import torch

import gpubp
from gpubp.cli.commands import main
from gpubp.core import compiled
from gpubp.kernels import cpu as C
from gpubp.kernels import cpu_dropout as CD
from gpubp.kernels import dropout as D
from gpubp.kernels import reference as R
from gpubp.optim.optimizers import SGD, Adam
from tests.test_activations import TORCH
from tests.test_cuda_kernels import run_simulated, TESTS

HIDDEN = gpubp.activations.HIDDEN  # every hidden activation takes dropout
SLOPE = 0.2  # leaky_relu's, not the default: the kernels must take it


class PerKernelSGD(SGD):
    """SGD that the compiled epoch does not take (it takes SGD and Adam themselves)."""


def _data(P=50, n_in=6, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(P, n_in)), rng.integers(0, n_out, P)


def _net(backend="cpu", dtype="float64", dropout=(0.3, 0.5), hidden=("tanh", "relu"), seed=4):
    slope = SLOPE if "leaky_relu" in hidden else None
    return gpubp.Network([6, 9, 7, 3], hidden=list(hidden), dropout=list(dropout), seed=seed,
                         backend=backend, dtype=dtype, negative_slope=slope)


def _pair(name):
    """Two hidden layers of ``name`` (silu over tanh: two silu layers of small weights
    leave too few entries far from 0 to tell a wrong g' apart)."""
    return (name, "tanh" if name == "silu" else name)


# -- the masks ---------------------------------------------------------------------------


def test_the_bits_are_splitmix64():
    # SplitMix64 from state 1234567: its first outputs (Vigna's reference, splitmix64.c)
    key = 1234567
    state = key
    for i in range(4):
        state = (state + D.GOLDEN) & D.MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & D.MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & D.MASK64
        assert D.bits(key, i) == z ^ (z >> 31)
    thresh = D.threshold(0.25)
    want = [(D.bits(key, i) >> 40) >= thresh for i in range(12)]
    assert D.keep_mask(key, (3, 4), thresh).ravel().tolist() == want
    assert int(CD._layer_key(np.uint64(key), 3, 2)) == D.bits(D.bits(key, 3), 2)


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_mask_rate_and_independence(p):
    shape = (400, 500)
    m1 = D.keep_mask(D.bits(7, 1), shape, D.threshold(p))
    m2 = D.keep_mask(D.bits(7, 2), shape, D.threshold(p))
    n = m1.size
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs((1 - m1.mean()) - p) < 5 * sigma  # the rate
    assert abs((1 - m2.mean()) - p) < 5 * sigma
    both = (m1 & m2).mean()  # two layers' masks are independent
    assert abs(both - (1 - p) ** 2) < 5 * np.sqrt((1 - p) ** 2 / n)
    rows = m1.mean(axis=1)  # no structure along rows or columns
    assert rows.std() < 4 * np.sqrt(p * (1 - p) / shape[1])
    neighbours = (m1[:, 1:] == m1[:, :-1]).mean()
    assert abs(neighbours - (p * p + (1 - p) ** 2)) < 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", HIDDEN)
def test_cpu_loops_match_the_numpy_twin(dtype, activation):
    """The forward epilogue then the mask, and the fused δ, against the reference: ``g'``
    of the unscaled ``a``, or of the ``z`` kept before the mask (gelu, gelu_tanh, silu)."""
    rng = np.random.default_rng(1)
    drop = D.layer_drop(0xDEADBEEF12345, 1, 0.4)
    z, b = (2 * rng.normal(size=(37, 13))).astype(dtype), rng.normal(size=13).astype(dtype)
    from_z = activation in R.FROM_Z
    got, want = z.copy(), z.copy()
    z_got, z_want = (np.empty_like(z), np.empty_like(z)) if from_z else (None, None)
    C.bias_activation(got, b, activation, SLOPE, z_got)
    CD.drop_forward(got, drop)
    R.bias_activation(want, b, activation, SLOPE, z_want, dropout=drop)
    # the loops (float64 inside) and the twin differ where 1 + erf or 1 + tanh cancel, for z << 0
    tol = dict(rtol=2e-6, atol=5e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got, want, **tol)
    assert np.array_equal(got == 0, ~D.kept(drop, z.shape) | (want == 0))
    if from_z:  # z^l kept whole, before the mask
        np.testing.assert_array_equal(z_got, z + b)
        np.testing.assert_array_equal(z_want, z + b)
    delta = rng.normal(size=z.shape).astype(dtype)
    got_d, want_d = delta.copy(), delta.copy()
    stored = z_want if from_z else want  # the same input: tanh's 1 − a² would amplify ulps
    CD.hidden_delta(got_d, stored, activation, drop, SLOPE)
    R.hidden_delta(want_d, stored, activation, SLOPE, dropout=drop)
    assert np.array_equal(got_d == 0, ~D.kept(drop, z.shape) | (want_d == 0))
    np.testing.assert_allclose(got_d, want_d, **tol)
    if dtype == np.float64:  # and the oracle: δ m/(1 − p) g'(z) from the whole z^l
        g_prime = R.activation_derivative(
            z + b if from_z else R.activate(z + b, activation, SLOPE), activation, SLOPE)
        oracle = delta * g_prime * D.kept(drop, z.shape) / (1 - 0.4)
        np.testing.assert_allclose(got_d, oracle, rtol=1e-13, atol=1e-15)


# -- gradients with a fixed mask -----------------------------------------------------------


def _fixed_masks(net, P, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.random((P, n)) >= p for n, p in zip(net.sizes[1:-1], net.dropout)]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("hidden", [("sigmoid", "tanh"), ("relu", "identity"),
                                    ("leaky_relu", "gelu"), ("elu", "silu"),
                                    ("selu", "softplus"), ("gelu_tanh", "leaky_relu")])
def test_gradients_with_a_fixed_mask_against_central_differences(backend, hidden):
    net = _net(backend, hidden=hidden)
    X, y = _data(20)
    masks = _fixed_masks(net, 20)
    errors = gpubp.gradcheck(net, X, y, dropout_mask=masks)
    assert np.all(errors <= 1), errors
    # the mask matters: the gradient without it is another one
    dW, _ = net.gradients(X, y, dropout_mask=masks)
    dW_plain, _ = net.gradients(X, y)
    assert np.abs(dW[0] - dW_plain[0]).max() > 1e-3


def _torch_gradients(net, X, y, masks):
    """The same thinned network in PyTorch autograd (float64)."""
    W, b = net.get_params()
    Wt = [torch.tensor(w, requires_grad=True) for w in W]
    bt = [torch.tensor(v, requires_grad=True) for v in b]
    a = torch.tensor(X)
    for l in range(net.L):
        z = a @ Wt[l] + bt[l]
        if l == net.L - 1:
            break
        name = net.hidden[l]
        g = TORCH[name](z, net.negative_slope) if name == "leaky_relu" else TORCH[name](z)
        a = g * torch.tensor(masks[l], dtype=torch.float64) / (1 - net.dropout[l])
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    loss.backward()
    return float(loss.detach()), [w.grad.numpy() for w in Wt], [v.grad.numpy() for v in bt]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_with_a_fixed_mask_against_pytorch(backend, hidden):
    net = _net(backend, hidden=_pair(hidden))
    X, y = _data(30)
    X *= 2  # both sides of every activation's bend
    masks = _fixed_masks(net, 30)
    cost, tW, tb = _torch_gradients(net, X, y, masks)
    assert net.loss(X, y, dropout_mask=masks) == pytest.approx(cost, rel=1e-12)
    dW, db = net.gradients(X, y, dropout_mask=masks)
    for got, want in zip(dW + db, tW + tb):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


# -- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend, optimizer, hidden", [
    ("reference", "sgd", ("tanh", "relu")), ("cpu", "sgd", ("tanh", "relu")),
    ("cpu", "per-kernel", ("tanh", "relu")), ("cpu", "sgd", ("gelu", "leaky_relu")),
    ("reference", "sgd", ("silu", "selu")), ("cpu", "per-kernel", ("gelu_tanh", "softplus"))])
def test_a_training_step_descends_the_gradient_of_its_masks(backend, optimizer, hidden):
    """One fit step (the compiled epoch on cpu with sgd) is θ − η ∇C of the masks that
    trace shows for the first step of an epoch drawn from the same generator state."""
    X, y = _data(40)
    net, probe = _net(backend, hidden=hidden), _net(backend, hidden=hidden)
    tr = probe.trace(X, y)  # draws the key as the first epoch does (shuffle=False)
    assert [m.shape for m in tr.masks] == [(40, 9), (40, 7)]
    for m, a, p in zip(tr.masks, tr.a[1:-1], net.dropout):
        assert np.all(a[~m] == 0) and 0.5 * p < 1 - m.mean() < 1.5 * p
    dW, db = net.gradients(X, y, dropout_mask=tr.masks)
    np.testing.assert_allclose(tr.dW[0], dW[0], rtol=1e-12, atol=1e-15)
    W0, b0 = net.get_params()
    opt = PerKernelSGD(lr=0.1) if optimizer == "per-kernel" else "sgd"
    if backend == "cpu":
        assert compiled.supported(net, opt if optimizer == "per-kernel" else SGD()) \
            == (optimizer == "sgd")
    net.fit(X, y, epochs=1, batch_size=40, lr=0.1, shuffle=False, verbose=0, optimizer=opt)
    W1, b1 = net.get_params()
    for w1, w0, g in zip(W1 + b1, W0 + b0, dW + db):
        np.testing.assert_allclose(w1, w0 - 0.1 * g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_cpu_path_trains_as_the_reference(dtype):
    X, y = _data(70)
    runs = {}
    for name, backend, opt in (("reference", "reference", "adam"), ("compiled", "cpu", "adam"),
                               ("per-kernel", "cpu", None)):
        net = _net(backend, dtype)
        if opt is None:  # a subclass of Adam: the per-kernel step
            opt = type("PerKernelAdam", (Adam,), {})()
        h = net.fit(X, y, epochs=3, batch_size=16, verbose=0, optimizer=opt)
        runs[name] = (np.concatenate([w.ravel() for w in net.get_params()[0]]),
                      h.history["loss"])
    tol = 1e-4 if dtype == "float32" else 1e-12
    for name in ("compiled", "per-kernel"):
        np.testing.assert_allclose(runs[name][0], runs["reference"][0], rtol=tol, atol=tol)
        np.testing.assert_allclose(runs[name][1], runs["reference"][1], rtol=tol)
    # and the masks matter: without dropout the run is another one
    plain = _net("reference", dtype, dropout=(0, 0))
    plain.fit(X, y, epochs=3, batch_size=16, verbose=0, optimizer="adam")
    assert np.abs(plain.get_params()[0][0].ravel()
                  - runs["reference"][0][:54]).max() > 1e-3


@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_activation_trains_alike_on_every_cpu_path(hidden, monkeypatch):
    """One epoch with dropout: the compiled epoch (which must take the network: no
    fallback to the per-kernel step), the per-kernel step and the reference agree for
    every hidden activation (leaky_relu with a slope of its own; gelu, gelu_tanh, silu
    with g' of the z kept before the mask)."""
    X, y = _data(70)
    X *= 2
    calls = []
    original = compiled.train_epoch
    monkeypatch.setattr(compiled, "train_epoch",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    runs = {}
    for name, backend, opt in (("reference", "reference", "adam"), ("compiled", "cpu", "adam"),
                               ("per-kernel", "cpu", None)):
        net = _net(backend, hidden=_pair(hidden))
        if opt is None:  # a subclass of Adam: the per-kernel step
            opt = type("PerKernelAdam", (Adam,), {})()
        h = net.fit(X, y, epochs=1, batch_size=16, verbose=0, optimizer=opt)
        assert len(calls) == (name == "compiled")  # the compiled epoch ran, and only there
        calls.clear()
        runs[name] = (np.concatenate([w.ravel() for w in net.get_params()[0]]),
                      h.history["loss"])
    # the same kernels, the update ordered otherwise: the last bit
    np.testing.assert_allclose(runs["compiled"][0], runs["per-kernel"][0], rtol=1e-14,
                               atol=1e-16)
    for name in ("compiled", "per-kernel"):
        np.testing.assert_allclose(runs[name][0], runs["reference"][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(runs[name][1], runs["reference"][1], rtol=1e-12)
    plain = _net("reference", hidden=_pair(hidden), dropout=(0, 0))
    plain.fit(X, y, epochs=1, batch_size=16, verbose=0, optimizer="adam")
    assert np.abs(plain.get_params()[0][0].ravel() - runs["reference"][0][:54]).max() > 1e-4


def test_the_compiled_epoch_in_several_calls_draws_each_batchs_masks():
    """A step shape large enough for the BLAS-thread probe splits the epoch into several
    compiled calls; each must take the masks of its batches' places in the epoch."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(800, 100)), rng.integers(0, 10, 800)
    params = []
    for backend in ("reference", "cpu"):
        net = gpubp.Network([100, 200, 10], hidden="relu", dropout=0.25, seed=1,
                            backend=backend, dtype="float64")
        assert compiled.blas_threads(net.sizes, 64) is None  # probed: several calls
        net.fit(X, y, epochs=1, batch_size=64, lr=0.05, verbose=0)
        params.append(net.get_params()[0][1])
    np.testing.assert_allclose(params[1], params[0], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_resume_is_exact(backend, tmp_path):
    X, y = _data(60)
    whole = _net(backend)
    whole.fit(X, y, epochs=4, batch_size=16, verbose=0, optimizer="adam")
    path = tmp_path / "run.npz"
    first = _net(backend)
    first.fit(X, y, epochs=2, batch_size=16, verbose=0, optimizer="adam", checkpoint=path)
    resumed = _net(backend, seed=99)  # different initial weights and generator: restored
    resumed.fit(X, y, epochs=4, batch_size=16, verbose=0, optimizer="adam", resume=path)
    for a, b in zip(whole.get_params()[0] + whole.get_params()[1],
                    resumed.get_params()[0] + resumed.get_params()[1]):
        np.testing.assert_array_equal(a, b)
    other = _net(backend, dropout=(0.1, 0.5))
    with pytest.raises(ValueError, match="dropout must match the checkpoint"):
        other.fit(X, y, epochs=4, batch_size=16, verbose=0, optimizer="adam", resume=path)


def test_runs_are_reproducible_and_seeded():
    X, y = _data(60)
    a, b, c = _net(), _net(), _net(seed=5)
    for net in (a, b):
        net.fit(X, y, epochs=2, batch_size=16, verbose=0)
    c.set_params(*_net().get_params())  # same start, another generator: other masks
    c.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(a.get_params()[0][0], b.get_params()[0][0])
    assert np.abs(a.get_params()[0][0] - c.get_params()[0][0]).max() > 1e-4


# -- inference is the whole network --------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_predict_and_evaluate_ignore_dropout(backend):
    X, y = _data(30)
    net = _net(backend)
    net.fit(X, y, epochs=1, batch_size=8, verbose=0)
    plain = _net(backend, dropout=(0, 0))
    plain.set_params(*net.get_params())
    out = net.forward(X)
    np.testing.assert_array_equal(out, net.forward(X))  # deterministic
    np.testing.assert_array_equal(out, plain.forward(X))  # the identity in inference
    np.testing.assert_array_equal(net.predict(X), plain.predict(X))
    assert net.evaluate(X, y) == plain.evaluate(X, y)
    assert net.loss(X, y) == plain.loss(X, y)
    np.testing.assert_array_equal(net.gradients(X, y)[0][0], plain.gradients(X, y)[0][0])
    assert plain.trace(X, y).masks is None


# -- files, pickles, the command line --------------------------------------------------------


def test_saved_and_pickled_networks_keep_their_rates(tmp_path):
    net = _net(dropout=(0.25, 0.0))
    path = tmp_path / "m.npz"
    net.save(path)
    assert gpubp.load(path).dropout == [0.25, 0.0]
    assert pickle.loads(pickle.dumps(net)).dropout == [0.25, 0.0]
    with pytest.raises(TypeError, match="architecture"):
        gpubp.load(path, dropout=0.5)


def test_the_command_line_trains_with_dropout(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "--data", "iris", "--layers", "8", "--dropout", "0.2", "--epochs",
                 "2", "--device", "cpu", "--verbose", "0", "--save", str(model)]) == 0
    assert "dropout 0.2" in capsys.readouterr().out
    assert gpubp.load(model).dropout == [0.2]
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", "iris", "--dropout", "1"])
    assert exit_.value.code == 2
    assert "--dropout" in capsys.readouterr().err
    assert main(["train", "--data", "iris", "--layers", "none", "--dropout", "0.2"]) != 0
    assert "--dropout applies to hidden layers" in capsys.readouterr().err


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("dropout, error, match", [
    (1.0, ValueError, r"dropout must be in \[0, 1\).*got 1.0"),
    (-0.1, ValueError, r"dropout must be in \[0, 1\)"),
    (float("nan"), ValueError, r"dropout must be in \[0, 1\)"),
    ("0.2", TypeError, "dropout must be a rate"),
    (True, TypeError, "dropout must be a rate"),
    ([0.1], ValueError, "dropout must be one rate or 2"),
    ([0.1, 1.5], ValueError, r"dropout\[1\] must be in \[0, 1\)"),
    ([0.1, None], TypeError, r"dropout\[1\] must be a number"),
])
def test_bad_rates_are_refused(dropout, error, match):
    with pytest.raises(error, match=match):
        gpubp.Network([4, 5, 5, 2], dropout=dropout)


def test_bad_masks_and_layers_are_refused():
    with pytest.raises(ValueError, match="dropout applies to hidden layers"):
        gpubp.Network([4, 2], dropout=0.5)
    assert gpubp.Network([4, 2], dropout=0.0).dropout == []
    net = _net()
    X, y = _data(10)
    good = _fixed_masks(net, 10)
    with pytest.raises(ValueError, match="dropout_mask must be a list of 2 arrays"):
        net.gradients(X, y, dropout_mask=good[:1])
    with pytest.raises(ValueError, match=r"dropout_mask\[1\] must have shape \(10, 7\)"):
        net.gradients(X, y, dropout_mask=[good[0], good[1][:5]])
    with pytest.raises(ValueError, match=r"dropout_mask\[0\] must hold 0 \(dropped\) or 1"):
        net.loss(X, y, dropout_mask=[good[0] * 2.0, good[1]])
    assert net.gradients(X, y, dropout_mask=[None, good[1]])[0][0].shape == (6, 9)


# -- CUDA: the simulator and PTX ---------------------------------------------------------------


def test_cuda_dropout_in_the_simulator():
    run_simulated(TESTS / "cudasim_dropout.py")


def test_cuda_dropout_kernels_compile_to_ptx():
    from gpubp.kernels import cuda_dropout  # compiles nothing until asked

    ptx = cuda_dropout.compile_ptx(cc=(8, 0))
    assert set(ptx) == {f"{k}_{d}" for k in ("bias_act_drop", "bias_act_keep_drop",
                                             "hidden_delta_drop")
                        for d in ("float32", "float64")}
    for name, text in ptx.items():
        assert ".entry" in text and "mul.lo.s64" in text, name  # the 64-bit integer hash
        if name.endswith("float32"):
            assert not [d for d in ("mul.f64", "add.f64", "cvt.f64") if d in text], name
