"""DP-SGD in compiled calls on the CPU (gpubp.kernels.cpu_private, gpubp.core.private_epoch)
against the per-kernel private step (gpubp.core.private_step) on the same draws; per-batch
callbacks in private epochs; the cached accounting against dp-accounting's own figures."""

import dp_accounting
import numpy as np
import pytest

import gpubp
from gpubp import DPSGD
from gpubp.core import private_epoch
from gpubp.training import privacy
from tests.test_batch_callbacks import Recorder

P = 45  # batch 8: 6 steps an epoch, the last of a shuffled epoch shorter


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, 4))
    return X, rng.integers(0, 3, P)


def _fit(compiled_steps, monkeypatch, dp, optimizer=None, hidden="tanh", dtype="float64",
         dropout=0.0, callbacks=(), epochs=2):
    """A private fit on the compiled steps, or (monkeypatched off) on private_step."""
    calls = []
    real = private_epoch.train_steps

    def counting(*args, **kwargs):
        calls.append(len(args[3][1]) - 1)  # the steps of this call
        return real(*args, **kwargs)

    monkeypatch.setattr(private_epoch, "train_steps", counting)
    monkeypatch.setattr(private_epoch, "supported", lambda *_: compiled_steps)
    net = gpubp.Network([4, 6, 5, 3], hidden=hidden, output="softmax", dtype=dtype, seed=1,
                        dropout=dropout)
    X, y = _data()
    history = gpubp.training.fit(
        net, X, y, epochs=epochs, batch_size=8, verbose=0, privacy=dp,
        optimizer=optimizer or gpubp.SGD(lr=0.2), rng=np.random.default_rng(7),
        callbacks=list(callbacks))
    monkeypatch.undo()
    assert (sum(calls) > 0) == compiled_steps  # no silent fallback
    return net, history, calls


@pytest.mark.parametrize("poisson", [True, False])
@pytest.mark.parametrize("sigma", [0.0, 1.1])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum_penalty", "adam"])
def test_compiled_steps_equal_the_private_step(monkeypatch, poisson, sigma, optimizer):
    dp = DPSGD(max_grad_norm=0.4, noise_multiplier=sigma, poisson=poisson)
    runs = []
    for compiled_steps in (True, False):
        opt = {"sgd": gpubp.SGD(lr=0.2),
               "momentum_penalty": gpubp.SGD(lr=0.1, momentum=0.9, penalty=0.3),
               "adam": gpubp.Adam(lr=0.02)}[optimizer]
        net, history, _ = _fit(compiled_steps, monkeypatch, dp, opt)
        runs.append((net.theta.copy(), history))
    (theta, history), (twin, twin_history) = runs
    np.testing.assert_allclose(theta, twin, rtol=0, atol=1e-12)
    start = gpubp.Network([4, 6, 5, 3], output="softmax", dtype="float64", seed=1).theta
    assert np.abs(theta - start).max() > 0.01  # it trained
    for key in ("loss", "accuracy", "epsilon") + (("penalty",) if "penalty" in optimizer
                                                     else ()):
        np.testing.assert_allclose(history[key], twin_history[key], rtol=1e-13)


@pytest.mark.parametrize("hidden, rate", [("gelu", 0.0), ("relu", 0.3)])
def test_kept_z_and_dropout_take_the_same_steps(monkeypatch, hidden, rate):
    """gelu's g' reads the kept z; dropout's masks are those of the nonempty batches."""
    dp = DPSGD(max_grad_norm=0.4, noise_multiplier=0.7)
    (a, ha, _), (b, hb, _) = (_fit(c, monkeypatch, dp, hidden=hidden, dropout=rate)
                              for c in (True, False))
    np.testing.assert_allclose(a.theta, b.theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-13)


def test_float32_agrees_to_its_precision(monkeypatch):
    dp = DPSGD(max_grad_norm=0.4, noise_multiplier=1.1)
    (a, _, _), (b, _, _) = (_fit(c, monkeypatch, dp, dtype="float32") for c in (True, False))
    assert a.theta.dtype == np.float32
    np.testing.assert_allclose(a.theta, b.theta, rtol=0, atol=2e-5)


def test_empty_poisson_batches_step_on_the_noise_alone(monkeypatch):
    """q = 1/45 with batch 1: many of the 45 steps sample no row."""
    dp = DPSGD(max_grad_norm=0.4, noise_multiplier=1.0)
    runs, sizes = [], []
    real = private_epoch.train_steps

    def recording(*args, **kwargs):
        sizes.extend(np.diff(args[3][1]))
        return real(*args, **kwargs)

    for compiled_steps in (True, False):
        monkeypatch.setattr(private_epoch, "supported", lambda *_: compiled_steps)
        monkeypatch.setattr(private_epoch, "train_steps", recording)
        net = gpubp.Network([4, 3], output="softmax", dtype="float64", seed=1)
        X, y = _data()
        gpubp.training.fit(net, X, y, epochs=1, batch_size=1, verbose=0, privacy=dp,
                           rng=np.random.default_rng(3))
        runs.append(net.theta.copy())
    assert len(sizes) == P and 0 in sizes and max(sizes) > 1
    np.testing.assert_allclose(runs[0], runs[1], rtol=0, atol=1e-12)


def test_noise_blocks_split_the_epoch_into_calls(monkeypatch):
    """One call, calls with the draws ahead on a thread, noise blocks of one step's
    draws (a call per step): the same steps."""
    dp = DPSGD(max_grad_norm=0.4, noise_multiplier=1.1)
    monkeypatch.setattr(privacy, "_spare_core", lambda: False)
    whole, _, calls = _fit(True, monkeypatch, dp, epochs=1)
    assert calls == [6]
    monkeypatch.setattr(privacy, "_spare_core", lambda: True)
    ahead, _, calls = _fit(True, monkeypatch, dp, epochs=1)
    assert calls == [2, 2, 2]  # privacy.AHEAD_CHUNKS: the draws run ahead on a thread
    monkeypatch.setattr(privacy, "NOISE_BYTES", 1)
    monkeypatch.setattr(privacy, "_spare_core", lambda: False)
    split, _, calls = _fit(True, monkeypatch, dp, epochs=1)
    assert calls == [1] * 6
    np.testing.assert_array_equal(whole.theta, ahead.theta)
    np.testing.assert_array_equal(whole.theta, split.theta)


@pytest.mark.parametrize("every, stop_at", [(1, None), (2, None), (2, 3)])
def test_per_batch_callbacks_in_private_epochs(monkeypatch, every, stop_at):
    dp = DPSGD(max_grad_norm=0.4, noise_multiplier=1.1)
    runs = []
    for compiled_steps in (True, False):
        cb = Recorder(every, stop_at)
        net, history, calls = _fit(compiled_steps, monkeypatch, dp, callbacks=[cb])
        runs.append((net.theta.copy(), history, cb.calls))
        if compiled_steps:  # one compiled call per chunk between the callbacks
            assert set(calls) == {every}
    (theta, history, calls), (twin, twin_history, twin_calls) = runs
    np.testing.assert_allclose(theta, twin, rtol=0, atol=1e-12)
    assert [b for b, _ in calls] == [b for b, _ in twin_calls]
    expected = list(range(every - 1, 6, every))
    if stop_at is None:
        assert [b for b, _ in calls] == expected * 2
    else:  # stopped inside the first epoch: ε of the 4 steps taken
        assert [b for b, _ in calls] == [1, 3] and len(history["epsilon"]) == 1
        assert history["epsilon"][0] == dp.epsilon(1 / 6, 4)
    for (_, logs), (_, twin_logs) in zip(calls, twin_calls):
        assert logs["size"] == twin_logs["size"] and logs["step"] == twin_logs["step"]
        assert logs["loss"] == pytest.approx(twin_logs["loss"], rel=1e-12)
    assert history["loss"] == pytest.approx(twin_history["loss"], rel=1e-13)


def test_a_callback_after_an_empty_poisson_batch_sees_no_rows():
    calls = Recorder()
    net = gpubp.Network([4, 3], output="softmax", dtype="float64", seed=1)
    gpubp.training.fit(net, *_data(), epochs=1, batch_size=1, verbose=0, callbacks=[calls],
                       privacy=DPSGD(max_grad_norm=0.4, noise_multiplier=1.0),
                       rng=np.random.default_rng(3))
    assert len(calls.calls) == P
    empty = [logs for _, logs in calls.calls if logs["size"] == 0]
    assert empty and all(logs["loss"] == 0.0 for logs in empty)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_cached_epsilon_is_a_fresh_accountants_figure(accountant):
    dp = DPSGD(max_grad_norm=1.0, noise_multiplier=0.9, delta=1e-6, accountant=accountant)
    q = 0.07
    before = privacy._one_step.cache_info().misses
    for steps in (1, 13, 40, 333):
        own = (dp_accounting.rdp.RdpAccountant() if accountant == "rdp"
               else dp_accounting.pld.PLDAccountant())
        own.compose(dp_accounting.PoissonSampledDpEvent(
            q, dp_accounting.GaussianDpEvent(0.9)), steps)
        assert dp.epsilon(q, steps) == own.get_epsilon(1e-6)
    assert privacy._one_step.cache_info().misses == before + 1  # one step's work, once
