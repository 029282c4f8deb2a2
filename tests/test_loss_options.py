"""The losses of issue 19: huber, l1, label smoothing; class and sample weights in fit.

Each loss's derivative against central differences and the whole network's gradients
against PyTorch autograd (float64); ``class_weight="balanced"`` against scikit-learn's
sample weights; integer sample weights against repeated rows; every backend and path
(reference, cpu per-kernel, the compiled epoch, cuda in the simulator) against the
reference; and the errors.
"""

import numpy as np
import pytest
import torch

import gpubp
from gpubp.core import backprop, compiled
from gpubp.kernels import cpu as cpu_kernels
from gpubp.kernels import reference
from gpubp.optim.optimizers import SGD, Adam
from tests.test_cuda_kernels import TESTS, run_simulated
from tests.conftest import make_targets

# (output, loss, Network keywords): every new loss and option
CASES = [
    ("identity", "huber", {"huber_delta": 0.7}),
    ("identity", "huber", {}),
    ("tanh", "huber", {"huber_delta": 2.0}),
    ("identity", "l1", {}),
    ("sigmoid", "l1", {}),
    ("softmax", "cross_entropy", {"label_smoothing": 0.1}),
    ("softmax", "cross_entropy", {"label_smoothing": 0.0}),
    ("sigmoid", "binary_cross_entropy", {"label_smoothing": 0.2}),
]
IDS = [f"{o}-{l}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for o, l, kw in CASES]


def _problem(loss, P=23, n_in=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, n_in))
    Y = make_targets(rng, P, n_out, loss)
    if loss not in ("cross_entropy", "binary_cross_entropy"):
        Y *= 1.5  # residuals on both sides of huber's δ
    return X, Y


def _net(output, loss, kw, backend="cpu", dtype="float64", seed=3, sizes=(4, 5, 3)):
    return gpubp.Network(list(sizes), hidden="tanh", output=output, loss=loss,
                         backend=backend, dtype=dtype, seed=seed, **kw)


# -- the loss functions themselves --------------------------------------------------------
@pytest.mark.parametrize("output, loss, kw", CASES, ids=IDS)
def test_output_delta_is_the_derivative_of_the_cost(output, loss, kw):
    """δ^L = ∂C/∂z^L against central differences of the reference cost (float64)."""
    rng = np.random.default_rng(1)
    P, n = 6, 3
    _, Y = _problem(loss, P, 1, n, seed=2)
    z = rng.normal(size=(P, n)) * 1.5
    param = gpubp.losses.loss_param(loss, **kw)

    def cost(z):
        a = reference.activate(z.copy(), output)
        return reference.example_costs(a, Y, loss, param).sum() / P

    a = reference.activate(z.copy(), output)
    delta = np.empty_like(a)
    C = reference.output_delta(a, Y, output, loss, delta, param)
    assert C == pytest.approx(cost(z), rel=1e-14)
    h = 1e-6
    numeric = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        numeric[idx] = (cost(zp) - cost(zm)) / (2 * h)
    np.testing.assert_allclose(delta, numeric, rtol=1e-7, atol=1e-9)
    got = np.empty_like(a)  # and the fused CPU kernel agrees
    assert cpu_kernels.output_delta(a, Y, output, loss, got, param) == pytest.approx(C, rel=1e-13)
    np.testing.assert_allclose(got, delta, rtol=1e-13, atol=1e-15)


def test_huber_and_l1_at_their_kinks():
    """huber is ½d² up to |d| = δ and δ(|d| − δ/2) beyond; l1's slope at d = 0 is 0
    (PyTorch's sign(0)) on the reference and the CPU kernels."""
    a = np.array([[0.0, 1.0, -3.0, 0.5]])
    y = np.zeros_like(a)
    for kernels in (reference, cpu_kernels):
        delta = np.empty_like(a)
        c = kernels.output_delta(a, y, "identity", "huber", delta, 1.0)
        assert c == pytest.approx(0 + 0.5 + (3 - 0.5) + 0.125, rel=1e-15)
        np.testing.assert_array_equal(delta, [[0.0, 1.0, -1.0, 0.5]])
        c = kernels.output_delta(a, y, "identity", "l1", delta)
        assert c == pytest.approx(4.5, rel=1e-15)
        np.testing.assert_array_equal(delta, [[0.0, 1.0, -1.0, 1.0]])


# -- the whole network against PyTorch autograd -----------------------------------------
def _torch_cost(net, X, Y, s=None):
    """The network's cost in PyTorch (float64), and its parameters as leaves."""
    W, b = net.get_params()
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in W + b]
    a = torch.tensor(X)
    L = len(W)
    for l in range(L):
        z = a @ params[l] + params[L + l]
        a = torch.tanh(z) if l < L - 1 else z
    y = torch.tensor(Y)
    eps, delta = net.loss_param, net.loss_param
    name, output = net.loss_name, net.output
    if name == "cross_entropy":
        rows = torch.nn.CrossEntropyLoss(label_smoothing=eps, reduction="none")(
            a, y.argmax(dim=1))
    elif name == "binary_cross_entropy":
        rows = torch.nn.BCEWithLogitsLoss(reduction="none")(a, y * (1 - eps) + eps / 2).sum(1)
    else:
        out = {"identity": a, "tanh": torch.tanh(a), "sigmoid": torch.sigmoid(a)}[output]
        f = torch.nn.HuberLoss(delta=delta, reduction="none") if name == "huber" \
            else torch.nn.L1Loss(reduction="none")
        rows = f(out, y).sum(1)
    w = torch.ones(len(X), dtype=torch.float64) if s is None else torch.tensor(s)
    C = (rows * w).sum() / w.sum()
    C.backward()
    return float(C.detach()), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("output, loss, kw", CASES, ids=IDS)
def test_gradients_equal_pytorch_autograd(output, loss, kw, backend, weighted):
    X, Y = _problem(loss)
    s = np.random.default_rng(4).integers(0, 4, len(X)).astype(float) if weighted else None
    net = _net(output, loss, kw, backend)
    C, want = _torch_cost(net, X, Y, s)
    assert net.loss(X, Y, sample_weight=s) == pytest.approx(C, rel=1e-12)
    dW, db = net.gradients(X, Y, sample_weight=s)
    for got, ref in zip(dW + db, want):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("output, loss, kw", CASES, ids=IDS)
def test_gradients_equal_central_differences(output, loss, kw):
    X, Y = _problem(loss, P=9)
    net = _net(output, loss, kw, "cpu")
    s = np.arange(9) % 3 + 0.5
    W, b = net.get_params()
    dW, db = net.gradients(X, Y, sample_weight=s)
    h = 1e-6
    for l in range(net.L):
        for idx in [(0, 0), (W[l].shape[0] - 1, W[l].shape[1] - 1)]:
            Wp = [w.copy() for w in W]
            Wp[l][idx] += h
            net.set_params(Wp, b)
            cp = net.loss(X, Y, sample_weight=s)
            Wp[l][idx] -= 2 * h
            net.set_params(Wp, b)
            cm = net.loss(X, Y, sample_weight=s)
            assert dW[l][idx] == pytest.approx((cp - cm) / (2 * h), rel=1e-6, abs=1e-9)
        net.set_params(W, b)


# -- class and sample weights in fit ----------------------------------------------------
def test_balanced_class_weight_equals_scikit_learns_sample_weights(monkeypatch):
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 4))
    y = np.r_[np.zeros(25, int), np.ones(10, int), np.full(5, 2)]
    s = compute_sample_weight("balanced", y)
    a, b = (_net("softmax", "cross_entropy", {"label_smoothing": 0.05}) for _ in range(2))
    a.fit(X, y, epochs=3, batch_size=8, lr=0.1, verbose=0, class_weight="balanced")
    b.fit(X, y, epochs=3, batch_size=8, lr=0.1, verbose=0, sample_weight=s)
    np.testing.assert_array_equal(a.theta, b.theta)
    # a dict, times sample weights; classes left out weigh 1
    c, d = (_net("softmax", "cross_entropy", {}) for _ in range(2))
    given = np.arange(40) % 3 + 1.0
    c.fit(X, y, epochs=2, batch_size=8, verbose=0, class_weight={2: 4.0}, sample_weight=given)
    d.fit(X, y, epochs=2, batch_size=8, verbose=0, sample_weight=given * np.where(y == 2, 4, 1))
    np.testing.assert_array_equal(c.theta, d.theta)


def test_balanced_class_weight_of_one_sigmoid_output():
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(30, 4)), (np.arange(30) < 7).astype(int)
    a, b = (_net("sigmoid", "binary_cross_entropy", {}, sizes=(4, 5, 1)) for _ in range(2))
    a.fit(X, y, epochs=2, batch_size=8, verbose=0, class_weight="balanced")
    b.fit(X, y, epochs=2, batch_size=8, verbose=0, sample_weight=compute_sample_weight(
        "balanced", y))
    np.testing.assert_array_equal(a.theta, b.theta)


def _count_paths(monkeypatch):
    calls = {"compiled": 0, "per_kernel": 0}
    epoch, step = compiled.train_epoch, backprop.train_step

    def counted_epoch(*args, **kwargs):
        calls["compiled"] += 1
        return epoch(*args, **kwargs)

    def counted_step(*args, **kwargs):
        calls["per_kernel"] += 1
        return step(*args, **kwargs)

    monkeypatch.setattr(compiled, "train_epoch", counted_epoch)
    monkeypatch.setattr(backprop, "train_step", counted_step)
    return calls


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("output, loss, kw", CASES, ids=IDS)
def test_integer_weights_equal_repeated_rows_on_the_compiled_epoch(output, loss, kw, optimizer,
                                                                   monkeypatch):
    X, Y = _problem(loss, P=15)
    s = np.random.default_rng(7).integers(0, 4, 15)
    s[0] = 2
    rows = np.repeat(np.arange(15), s)
    calls = _count_paths(monkeypatch)
    weighted, repeated = _net(output, loss, kw), _net(output, loss, kw)
    h_w = weighted.fit(X, Y, epochs=3, batch_size=15, shuffle=False, verbose=0, lr=0.05,
                       optimizer=optimizer, sample_weight=s)
    h_r = repeated.fit(X[rows], Y[rows], epochs=3, batch_size=len(rows), shuffle=False,
                       verbose=0, lr=0.05, optimizer=optimizer)
    assert calls == {"compiled": 6, "per_kernel": 0}, "a weighted fit left the compiled epoch"
    np.testing.assert_allclose(weighted.theta, repeated.theta, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_w.history["loss"], h_r.history["loss"], rtol=1e-12)
    assert not np.allclose(weighted.theta, _net(output, loss, kw).theta)


@pytest.mark.parametrize("output, loss, kw", CASES, ids=IDS)
def test_every_path_equals_the_reference(output, loss, kw, monkeypatch):
    """Mini-batches, shuffled, weighted, with a penalty: the compiled epoch, the CPU
    per-kernel step and the reference backend take the same steps."""
    X, Y = _problem(loss, P=29)
    s = np.random.default_rng(8).random(29) * 2
    nets = [_net(output, loss, kw, "reference"), _net(output, loss, kw, "cpu"),
            _net(output, loss, kw, "cpu")]
    histories = []
    for i, net in enumerate(nets):
        if i == 2:  # the per-kernel step on the CPU backend
            monkeypatch.setattr(compiled, "supported", lambda net, optimizer: False)
        opt = SGD(lr=0.05, momentum=0.5, penalty=1e-3)
        histories.append(net.fit(X, Y, epochs=2, batch_size=8, verbose=0, optimizer=opt,
                                 sample_weight=s).history["loss"])
    for net, h in zip(nets[1:], histories[1:]):
        np.testing.assert_allclose(h, histories[0], rtol=1e-12)
        np.testing.assert_allclose(net.theta, nets[0].theta, rtol=1e-12, atol=1e-13)


def test_evaluate_weighs_loss_and_accuracy():
    X, Y = _problem("cross_entropy", P=20)
    net = _net("softmax", "cross_entropy", {"label_smoothing": 0.1})
    s = np.arange(20) % 4
    rows = np.repeat(np.arange(20), s)
    got, want = net.evaluate(X, Y, sample_weight=s), net.evaluate(X[rows], Y[rows])
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
    assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-15)


def test_loss_parameters_survive_save_load_and_pickling(tmp_path):
    import pickle

    for output, loss, kw in CASES:
        net = _net(output, loss, kw)
        net.save(tmp_path / "m.npz")
        for copy in (gpubp.io.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(net))):
            assert (copy.loss_name, copy.loss_param) == (net.loss_name, net.loss_param)
    assert gpubp.io.load(tmp_path / "m.npz").loss_param == 0.2
    with pytest.raises(TypeError, match="label_smoothing"):
        gpubp.io.load(tmp_path / "m.npz", label_smoothing=0.3)


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, error, match", [
    ({"loss": "cross_entropy", "label_smoothing": 1.0}, ValueError, r"label_smoothing must be "
     r"a number in \[0, 1\), got 1.0"),
    ({"loss": "cross_entropy", "label_smoothing": -0.1}, ValueError, r"in \[0, 1\)"),
    ({"loss": "cross_entropy", "label_smoothing": "0.1"}, TypeError, "label_smoothing"),
    ({"loss": "huber", "output": "identity", "huber_delta": 0}, ValueError, "huber_delta must "
     "be a number > 0, got 0.0"),
    ({"loss": "huber", "output": "identity", "huber_delta": float("inf")}, ValueError, "> 0"),
    ({"loss": "mse", "output": "identity", "label_smoothing": 0.1}, ValueError,
     "label_smoothing=0.1 applies to loss 'binary_cross_entropy' or 'cross_entropy', got "
     "loss='mse'"),
    ({"loss": "cross_entropy", "huber_delta": 2.0}, ValueError, "applies to loss 'huber'"),
    ({"loss": "huber", "output": "softmax"}, ValueError, "elementwise output"),
])
def test_bad_loss_options_are_refused(kw, error, match):
    kw = {"output": "softmax", **kw}
    with pytest.raises(error, match=match):
        gpubp.Network([3, 2], **kw)


@pytest.mark.parametrize("fit_kw, error, match", [
    ({"sample_weight": -np.ones(12)}, ValueError, "sample_weight must hold finite values >= 0"),
    ({"sample_weight": np.ones(11)}, ValueError, r"sample_weight must have shape \(12,\)"),
    ({"class_weight": {3: 1.0}}, ValueError, r"unknown class 3: the classes are the integers "
     r"0..2"),
    ({"class_weight": {"a": 1.0}}, ValueError, "unknown class 'a'"),
    ({"class_weight": {0: -1.0}}, ValueError, r"class_weight\[0\] must be a finite number >= 0"),
    ({"class_weight": "balance"}, ValueError, "class_weight must be 'balanced'"),
    ({"class_weight": [1, 2, 3]}, TypeError, "class_weight must be 'balanced', a dict"),
    ({"class_weight": {0: 0.0, 1: 0.0, 2: 0.0}}, ValueError, "total weight of 0.0"),
])
def test_bad_weights_are_refused(fit_kw, error, match):
    X, Y = _problem("cross_entropy", P=12)
    net = _net("softmax", "cross_entropy", {})
    with pytest.raises(error, match=match):
        net.fit(X, Y, epochs=1, verbose=0, **fit_kw)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        net.evaluate(X, Y, sample_weight=np.ones(3))


@pytest.mark.parametrize("output, loss, sizes", [
    ("identity", "huber", (4, 5, 3)), ("sigmoid", "binary_cross_entropy", (4, 5, 3))])
def test_class_weight_needs_one_class_per_row(output, loss, sizes):
    X, Y = _problem(loss, P=12)
    net = _net(output, loss, {}, sizes=sizes)
    with pytest.raises(ValueError, match="class_weight needs a classifier with one class per "
                                         "row"):
        net.fit(X, Y, epochs=1, verbose=0, class_weight="balanced")


# -- cuda, in the simulator ---------------------------------------------------------------
def test_cuda_kernels_and_network_in_the_simulator():
    run_simulated(TESTS / "cudasim_loss_options.py", timeout=900)



# -- the command line -----------------------------------------------------------------------
def test_cli_trains_with_label_smoothing_and_balanced_class_weights(tmp_path, capsys):
    from gpubp.cli.commands import main

    model = tmp_path / "m.npz"
    assert main(["train", "--data", "iris", "--layers", "8", "--epochs", "3", "--verbose", "0",
                 "--label-smoothing", "0.1", "--class-weight", "balanced",
                 "--save", str(model)]) == 0, capsys.readouterr().err
    assert gpubp.io.load(model).loss_param == 0.1
    for bad, message in ((["--label-smoothing", "1"], "expected a number in [0, 1), got '1'"),
                         (["--class-weight", "even"], "invalid choice: 'even'")):
        with pytest.raises(SystemExit):
            main(["train", "--data", "iris", *bad])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--output", "identity", "--loss", "huber", "--huber-delta", "0.3"],
    ["--output", "tanh", "--loss", "l1"],
    ["--output", "softmax", "--label-smoothing", "0.2"],
    ["--output", "sigmoid", "--loss", "binary_cross_entropy", "--label-smoothing", "0.2"],
])
def test_cli_gradcheck_takes_the_loss_options(argv, capsys):
    from gpubp.cli.commands import main

    assert main(["gradcheck", "--layers", "4", "--hidden", "tanh", *argv]) == 0, \
        capsys.readouterr().err
    assert "ok:" in capsys.readouterr().out


def test_cli_gradcheck_refuses_an_option_its_loss_does_not_take(capsys):
    from gpubp.cli.commands import main

    assert main(["gradcheck", "--output", "identity", "--label-smoothing", "0.2"]) != 0
    assert "label_smoothing=0.2 applies to loss" in capsys.readouterr().err
