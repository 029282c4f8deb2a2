"""Differentially private SGD (gpubp.training.privacy, gpubp.core.private_step): the step
against the same step computed by hand in PyTorch and by Opacus itself, given the same
noise; plain SGD when nothing is clipped or noised; ε against dp-accounting's own call."""

import dp_accounting
import numpy as np
import pytest
import torch

import gpubp
from gpubp import DPSGD
from gpubp.core.private_step import private_step
from gpubp.training import privacy

from tests.test_per_example import make, torch_per_example


def torch_clipped_step(net, X, Y, C, noise, B, lr):
    """Opacus's DP-SGD step written out in PyTorch: per-sample gradients, each clipped by
    min(1, C / (‖g_p‖ + 1e-6)), summed, noise added, divided by B, an SGD step."""
    flat = torch.tensor(torch_per_example(net, X, Y))
    factor = (C / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
    step = ((factor[:, None] * flat).sum(dim=0) + torch.tensor(noise)) / B
    W, b = net.get_params()
    theta = np.concatenate([p.reshape(-1) for pair in zip(W, b) for p in pair])
    return theta - lr * step.numpy()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("C", [0.05, 1.5, 100.0])
def test_one_step_equals_the_clipped_sum_by_hand(backend, C):
    net, X, Y = make("tanh", "softmax", "cross_entropy", backend=backend, P=9)
    noise = np.random.default_rng(1).normal(scale=1.1 * C, size=net.theta.size)
    expected = torch_clipped_step(net, X, Y, C, noise, 12.5, 0.3)
    norms = net.per_example_gradient_norms(X, Y)
    assert (C < norms.min()) if C < 0.1 else (C > norms.max()) if C > 10 else \
        (norms.min() < C < norms.max())  # all, none or some of the rows clipped
    _, Yc = net._check_XY(X, Y)
    before = net.loss(X, Y)
    cost, P = private_step(net, gpubp.SGD(lr=0.3), X, Yc, np.arange(9), C, noise, 12.5)
    assert P == 9 and cost == pytest.approx(before, rel=1e-14)  # the batch's mean cost
    np.testing.assert_allclose(net.backend.to_host(net.theta), expected, rtol=0, atol=1e-12)


def test_one_step_equals_opacus_given_the_same_noise(monkeypatch):
    opacus = pytest.importorskip("opacus")
    from opacus.optimizers import optimizer as dp_optimizer  # to hand it our noise

    C, sigma, B, lr = 0.5, 1.3, 9, 0.2
    net, X, Y = make("sigmoid", "softmax", "cross_entropy", P=9)
    W, b = net.get_params()
    layers = []
    for l, (w, v) in enumerate(zip(W, b)):
        linear = torch.nn.Linear(*w.shape, dtype=torch.float64)
        linear.weight.data, linear.bias.data = torch.tensor(w.T.copy()), torch.tensor(v)
        layers += [linear, torch.nn.Sigmoid() if l < net.L - 1 else torch.nn.Identity()]
    model = opacus.GradSampleModule(torch.nn.Sequential(*layers))
    noise = np.random.default_rng(2).normal(scale=sigma * C, size=net.theta.size)
    draws = iter([torch.tensor(a.T.copy() if a.ndim == 2 else a) for pair in zip(
        *gpubp.core.layout.layer_views(noise, net.sizes)) for a in pair])
    monkeypatch.setattr(dp_optimizer, "_generate_noise",
                        lambda std, reference, **_: next(draws))
    opt = opacus.optimizers.DPOptimizer(torch.optim.SGD(model.parameters(), lr=lr),
                                        noise_multiplier=sigma, max_grad_norm=C,
                                        expected_batch_size=B)
    # inputs that require gradients: PyTorch warns of full backward hooks otherwise
    loss = torch.nn.functional.cross_entropy(model(torch.tensor(X, requires_grad=True)),
                                             torch.tensor(Y))
    loss.backward()
    opt.step()
    _, Yc = net._check_XY(X, Y)
    private_step(net, gpubp.SGD(lr=lr), X, Yc, np.arange(9), C, noise, B)
    W2, b2 = net.get_params()
    for l, (w, v) in enumerate(zip(W2, b2)):
        np.testing.assert_allclose(w, model._module[2 * l].weight.detach().numpy().T,
                                   atol=1e-12)
        np.testing.assert_allclose(v, model._module[2 * l].bias.detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_no_noise_and_no_clipping_is_plain_sgd_exactly(rate):
    """With dropout too: a private step draws the step's masks as train_step does."""
    runs = []
    for dp in (None, DPSGD(max_grad_norm=1e9, noise_multiplier=0.0, poisson=False)):
        net, X, Y = make("relu", "softmax", "cross_entropy", backend="reference", P=40)
        net = gpubp.Network(net.sizes, hidden="relu", dtype="float64", seed=0,
                            backend="reference", dropout=rate)
        history = net.fit(X, Y, epochs=3, batch_size=8, verbose=0, privacy=dp)
        runs.append((net.backend.to_host(net.theta), history))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1]["loss"] == runs[1][1]["loss"]
    assert runs[1][1]["epsilon"] == [np.inf] * 3  # no noise: no privacy


def test_a_poisson_epoch_is_its_sampled_steps():
    dp = DPSGD(max_grad_norm=0.3, noise_multiplier=0.8, delta=1e-5)
    net, X, Y = make("tanh", "sigmoid", "binary_cross_entropy", P=50)
    twin, _, _ = make("tanh", "sigmoid", "binary_cross_entropy", P=50)
    steps, q, B = privacy.schedule(dp, 50, 16)
    assert (steps, q, B) == (4, 0.25, 12)  # as Opacus: q = 1/⌈50/16⌉, B = ⌊50 q⌋
    history = gpubp.training.fit(net, X, Y, epochs=2, batch_size=16, verbose=0, privacy=dp,
                                 shuffle=False, rng=np.random.default_rng(5))
    rng, order, sizes = np.random.default_rng(5), np.arange(50), []
    for _ in range(2 * steps):
        batch = order[rng.random(50) < q]
        noise = rng.standard_normal(twin.theta.size, dtype=twin.dtype) * (0.8 * 0.3)
        sizes.append(private_step(twin, gpubp.SGD(lr=0.1), X, Y, batch, 0.3, noise, B)[1])
    np.testing.assert_allclose(net.backend.to_host(net.theta),
                               twin.backend.to_host(twin.theta), rtol=0, atol=1e-13)
    assert len(set(sizes)) > 1  # the batch sizes vary: they are Poisson samples
    assert history["epsilon"][0] < history["epsilon"][1]


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_is_the_accountants_own_figure(accountant):
    dp = DPSGD(max_grad_norm=1.0, noise_multiplier=1.1, delta=1e-5, accountant=accountant)
    net, X, Y = make("tanh", "softmax", "cross_entropy", P=60)
    history = net.fit(X, Y, epochs=2, batch_size=6, verbose=0, privacy=dp)
    for epoch, eps in enumerate(history["epsilon"]):
        own = (dp_accounting.rdp.RdpAccountant() if accountant == "rdp"
               else dp_accounting.pld.PLDAccountant())
        own.compose(dp_accounting.PoissonSampledDpEvent(
            0.1, dp_accounting.GaussianDpEvent(1.1)), 10 * (epoch + 1))
        assert eps == own.get_epsilon(1e-5)
    assert 0 < history["epsilon"][0] < history["epsilon"][1] < np.inf


def test_epsilon_is_close_to_opacus_accountants():
    accountants = pytest.importorskip("opacus.accountants")
    opacus_rdp = accountants.RDPAccountant()
    opacus_rdp.history = [(1.1, 0.01, 1000)]  # (σ, q, steps)
    ours = DPSGD(noise_multiplier=1.1, delta=1e-5).epsilon(0.01, 1000)
    assert ours == pytest.approx(opacus_rdp.get_epsilon(1e-5), rel=1e-3)


def test_bad_privacy_arguments_are_refused():
    net, X, Y = make("tanh", "softmax", "cross_entropy")
    with pytest.raises(TypeError, match="privacy must be None or a DPSGD, got dict"):
        net.fit(X, Y, privacy={"max_grad_norm": 1.0}, verbose=0)
    with pytest.raises(ValueError, match="privacy=DPSGD.* takes no sample_weight"):
        gpubp.training.fit(net, X, Y, privacy=DPSGD(), sample_weight=np.ones(7), verbose=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        DPSGD(max_grad_norm=0)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\), got 1.5"):
        DPSGD(delta=1.5)
    with pytest.raises(ValueError, match="accountant must be one of"):
        DPSGD(accountant="moments")
    with pytest.raises(TypeError, match="poisson must be True or False"):
        DPSGD(poisson="yes")


def test_a_penalty_joins_the_private_step_unclipped():
    """An optimizer's L2 penalty α W / B is added to the noisy clipped mean, unclipped."""
    dp = DPSGD(max_grad_norm=0.2, noise_multiplier=0.0, poisson=False)
    net, X, Y = make("tanh", "softmax", "cross_entropy", P=8)
    twin, _, Yc = make("tanh", "softmax", "cross_entropy", P=8)
    _, Yc = twin._check_XY(X, Y)
    net.fit(X, Y, epochs=1, batch_size=8, shuffle=False, verbose=0, privacy=dp,
            optimizer=gpubp.SGD(lr=0.1, penalty=0.5))
    W0 = twin.get_params()[0]
    private_step(twin, gpubp.SGD(lr=0.1), X, Yc, np.arange(8), 0.2, None, 8)
    W1, b1 = twin.get_params()
    W, b = net.get_params()
    for w, w0, w1 in zip(W, W0, W1):
        np.testing.assert_allclose(w, w1 - 0.1 * 0.5 * w0 / 8, rtol=0, atol=1e-13)
    for v, v1 in zip(b, b1):
        np.testing.assert_allclose(v, v1, rtol=0, atol=1e-15)  # no penalty on the biases


def test_a_resumed_private_run_equals_an_uninterrupted_one(tmp_path):
    """The noise and the Poisson batches come from the network's generator, which
    checkpoints record: resuming takes the same steps and reports the same ε."""
    dp = DPSGD(max_grad_norm=0.5, noise_multiplier=1.0)
    whole, X, Y = make("tanh", "softmax", "cross_entropy", P=30)
    full = whole.fit(X, Y, epochs=3, batch_size=6, verbose=0, privacy=dp)
    part, _, _ = make("tanh", "softmax", "cross_entropy", P=30)
    path = tmp_path / "run.ckpt"
    part.fit(X, Y, epochs=2, batch_size=6, verbose=0, privacy=dp, checkpoint=path)
    resumed_net, _, _ = make("tanh", "softmax", "cross_entropy", P=30)
    resumed = resumed_net.fit(X, Y, epochs=3, batch_size=6, verbose=0, privacy=dp,
                              resume=path)
    np.testing.assert_array_equal(resumed_net.backend.to_host(resumed_net.theta),
                                  whole.backend.to_host(whole.theta))
    assert resumed["epsilon"] == full["epsilon"]
