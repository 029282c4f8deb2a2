"""Per-batch callbacks: when on_batch_end is called, what it sees, stopping inside an epoch,
and the compiled epoch in chunks between the calls (same steps, no fallback)."""

import numpy as np
import pytest

import gpubp
from gpubp.core import compiled
from gpubp.training.callbacks import Callback, LambdaCallback

P, BATCH = 80, 8  # 10 batches per epoch


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(P, 4))
    return X, np.eye(3)[np.argmax(X[:, :3], axis=1)]


def _net(backend="cpu"):
    return gpubp.Network([4, 6, 3], hidden="tanh", output="softmax", dtype="float64", seed=1,
                         backend=backend)


class Recorder(Callback):
    def __init__(self, batch_every=1, stop_at=None):
        self.batch_every, self.stop_at, self.calls = batch_every, stop_at, []

    def on_batch_end(self, run, batch, logs):
        self.calls.append((batch, logs))
        if self.stop_at is not None and batch >= self.stop_at:
            run.stop(f"stopped at batch {batch}")


def _fit(net, data, callbacks, epochs=2):
    return net.fit(*data, epochs=epochs, batch_size=BATCH, lr=0.5, verbose=0,
                   callbacks=callbacks)


def _count_compiled_calls(monkeypatch):
    calls = []
    real = compiled.train_epoch

    def counting(*args, **kwargs):
        calls.append(len(args[4]))  # the rows of this call
        return real(*args, **kwargs)

    monkeypatch.setattr(compiled, "train_epoch", counting)
    return calls


def test_without_per_batch_callbacks_an_epoch_stays_one_compiled_call(data, monkeypatch):
    calls = _count_compiled_calls(monkeypatch)
    _fit(_net(), data, [LambdaCallback(on_epoch_end=lambda run, e, logs: None)])
    assert calls == [P, P]


def test_chunks_between_calls_take_the_same_steps(data, monkeypatch):
    plain = _net()
    history = _fit(plain, data, None)
    calls = _count_compiled_calls(monkeypatch)
    chunked, rec = _net(), Recorder(batch_every=3)
    chunked_history = _fit(chunked, data, [rec])
    # 10 batches in chunks of 3: 24, 24, 24, 8 rows, each epoch; compiled, no fallback
    assert calls == [24, 24, 24, 8] * 2
    assert [b for b, _ in rec.calls] == [2, 5, 8] * 2
    np.testing.assert_array_equal(plain.theta, chunked.theta)
    np.testing.assert_allclose(chunked_history["loss"], history["loss"], rtol=1e-13)
    assert [logs["size"] for _, logs in rec.calls] == [24] * 6
    assert [logs["step"] for _, logs in rec.calls] == [3, 6, 9, 13, 16, 19]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_batch_logs_are_the_batches_figures(data, backend):
    rec = Recorder()
    net = _net(backend)
    history = _fit(net, data, [rec], epochs=1)
    assert [b for b, _ in rec.calls] == list(range(10))
    losses = np.array([logs["loss"] for _, logs in rec.calls])
    accuracies = np.array([logs["accuracy"] for _, logs in rec.calls])
    # the epoch's figures are the row-weighted means of its batches'
    np.testing.assert_allclose(losses.mean(), history["loss"][0], rtol=1e-12)
    np.testing.assert_allclose(accuracies.mean(), history["accuracy"][0], rtol=1e-12)
    # the first batch's loss is the cost of its rows under the initial parameters
    first = _net(backend)
    order = np.arange(P)
    first.rng.shuffle(order)  # as fit shuffles: the network's generator, after the init
    rows = order[:BATCH]
    np.testing.assert_allclose(losses[0], first.loss(data[0][rows], data[1][rows]), rtol=1e-12)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_a_callback_stops_the_run_inside_an_epoch(data, backend):
    rec = Recorder(stop_at=2)
    net = _net(backend)
    history = _fit(net, data, [rec], epochs=5)
    assert len(history) == 1 and history.stop_reason == "stopped at batch 2"
    assert [b for b, _ in rec.calls] == [0, 1, 2]
    losses = [logs["loss"] for _, logs in rec.calls]
    np.testing.assert_allclose(history["loss"][0], np.mean(losses), rtol=1e-12)  # 24 rows
    # three steps taken: the same parameters as three steps of a run of 24 rows
    reference = _net(backend)
    order = np.arange(P)
    reference.rng.shuffle(order)
    reference.fit(data[0][order[:24]], data[1][order[:24]], epochs=1, batch_size=BATCH,
                  lr=0.5, shuffle=False, verbose=0)
    np.testing.assert_allclose(net.theta, reference.theta, rtol=1e-12)


def test_lambda_callback_on_batch_end_and_bad_batch_every(data):
    seen = []
    _fit(_net(), data, [LambdaCallback(on_batch_end=lambda run, b, logs: seen.append(b),
                                       batch_every=5)], epochs=1)
    assert seen == [4, 9]
    with pytest.raises(ValueError, match="batch_every must be a positive int, got 0"):
        _fit(_net(), data, [Recorder(batch_every=0)])
    with pytest.raises(TypeError, match="on_batch_end must be callable"):
        LambdaCallback(on_batch_end=3)


def test_per_batch_callbacks_on_the_simulated_device():
    import os
    import pathlib
    import re
    import subprocess
    import sys

    tests = pathlib.Path(__file__).resolve().parent
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(tests / "cudasim_batch_callbacks.py")],
        cwd=tests.parent, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulated cases failed:\n{tail}"
    assert re.search(r"\d+ passed", proc.stdout) and "skipped" not in proc.stdout, tail
