"""The cost of every term of the sum (issue 22): per-example gradient norms against one
``gradients()`` pass, a DP-SGD epoch against a plain one, and gpubp's DP-SGD against
Opacus (PyTorch) training the same MLP with the same clipping, noise and Poisson sampling.

Under ``pytest --benchmark`` each figure is the best of ``ROUNDS`` in this process (both
libraries on the same BLAS threads), recorded in ``extra_info`` (seconds, samples/s and
the ratios the issue bounds: norms ≤ 1.3× gradients, DP epoch ≤ 1.5× plain epoch,
gpubp ≥ 3× Opacus's samples/s); a plain ``pytest`` runs each once on a small case so that
they cannot rot. Nothing is asserted about speed. Results: ``docs/performance.md``.
"""

import time
import warnings

import numpy as np
import pytest

import gpubp
from gpubp.training import privacy as gpubp_privacy

ROUNDS = 3
SIZES, P, BATCH = [784, 256, 256, 10], 2048, 256  # timed case: digits-like, MNIST-wide
SMALL = [16, 8, 4], 64, 16  # the untimed smoke case


def _case(timing):
    sizes, P, batch = (SIZES, globals()["P"], BATCH) if timing else SMALL
    rng = np.random.default_rng(0)
    X = rng.normal(size=(P, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], P)
    return sizes, X, y, batch


def _best(f, timing):
    f()  # warm-up: compilation and first-touch pages are not throughput
    seconds = []
    for _ in range(ROUNDS if timing else 1):
        start = time.perf_counter()
        f()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def _record(benchmark, **figures):
    benchmark.extra_info.update(figures)
    benchmark.pedantic(lambda: None, rounds=1)  # the figures are timed above, in place


def test_norms_against_one_gradient_pass(benchmark, timing):
    sizes, X, y, _ = _case(timing)
    net = gpubp.Network(sizes, hidden="relu", seed=0)
    gradients = _best(lambda: net.gradients(X, y), timing)
    norms = _best(lambda: net.per_example_gradient_norms(X, y), timing)
    assert net.per_example_gradient_norms(X, y).shape == (len(X),)
    _record(benchmark, gradients_s=gradients, norms_s=norms, ratio=norms / gradients)


def _dp():
    return gpubp.DPSGD(max_grad_norm=1.0, noise_multiplier=1.1, delta=1e-5)


EPOCHS = 5  # a private fit's epochs each report ε after a new step count: timed per epoch


def _fit_epoch(net, X, y, batch, privacy, timing):
    """Seconds per epoch of a fit of :data:`EPOCHS` epochs (one untimed), best of rounds;
    ε's steps-keyed cache cleared before each fit, so that every epoch's ε is computed."""
    clear = getattr(gpubp_privacy, "_epsilon", None)  # absent before the cache existed
    epochs = EPOCHS if timing else 1

    def fit():
        if clear is not None:
            clear.cache_clear()
        net.fit(X, y, epochs=epochs, batch_size=batch, verbose=0, privacy=privacy)

    return _best(fit, timing) / epochs


def test_private_epoch_against_a_plain_epoch(benchmark, timing):
    sizes, X, y, batch = _case(timing)
    seconds = {}
    for name, privacy in (("plain", None), ("private", _dp())):
        net = gpubp.Network(sizes, hidden="relu", seed=0)
        seconds[name] = _fit_epoch(net, X, y, batch, privacy, timing)
    dp = _dp()
    steps = -(-len(X) // batch)
    clear = getattr(gpubp_privacy, "_epsilon", None)  # ε of a new step count, as each epoch's

    def epsilon():
        if clear is not None:
            clear.cache_clear()
        dp.epsilon(1 / steps, steps * EPOCHS)

    accountant = _best(epsilon, timing)
    _record(benchmark, plain_epoch_s=seconds["plain"], private_epoch_s=seconds["private"],
            accountant_s=accountant, ratio=seconds["private"] / seconds["plain"],
            samples_per_s=len(X) / seconds["private"])


def _opacus_epoch(sizes, X, y, batch):
    """An epoch of Opacus DP-SGD on the same MLP: returns a callable running one."""
    torch = pytest.importorskip("torch")
    opacus = pytest.importorskip("opacus")
    layers = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [torch.nn.Linear(n_in, n_out)] + ([torch.nn.ReLU()] if l < len(sizes) - 2
                                                     else [])
    model = torch.nn.Sequential(*layers)
    data = torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(y))
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():  # its notes on secure_mode and the accountant
        warnings.simplefilter("ignore")
        model, optimizer, loader = opacus.PrivacyEngine().make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.1,
            max_grad_norm=1.0, poisson_sampling=True)

    def epoch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch's full-backward-hook notes
            for xb, yb in loader:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
    return epoch


def test_private_epoch_against_opacus(benchmark, timing):
    sizes, X, y, batch = _case(timing)
    epoch = _opacus_epoch(sizes, X, y, batch)
    opacus_s = _best(epoch, timing)
    net = gpubp.Network(sizes, hidden="relu", seed=0)
    privacy = _dp()
    gpubp_s = _fit_epoch(net, X, y, batch, privacy, timing)
    _record(benchmark, gpubp_samples_per_s=len(X) / gpubp_s,
            opacus_samples_per_s=len(X) / opacus_s, ratio=opacus_s / gpubp_s)
