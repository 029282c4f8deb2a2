"""Checkpoints: an interrupted and resumed run ends exactly where an uninterrupted one does."""

import functools
import operator
import os

import numpy as np
import pytest

import gpubp
from gpubp import datasets
from gpubp.training import checkpoint
from gpubp.training.callbacks import EarlyStopping, LambdaCallback
from gpubp.optim.optimizers import SGD, Adam


class Interrupt(Exception):
    pass


def _interrupt_at(epoch):
    def hook(run, e):
        if e == epoch:
            raise Interrupt
    return LambdaCallback(on_epoch_begin=hook)


@pytest.fixture(scope="module")
def wine():
    return datasets.load("wine")


CASES = {
    "sgd": {"optimizer": lambda: SGD(lr=0.1)},
    "nesterov+step+decay": {"optimizer": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True,
                                                      weight_decay=1e-3, schedule="step")},
    "adam+cosine+split+early": {"optimizer": lambda: Adam(lr=0.01, schedule="cosine"),
                                    "validation_split": 0.2, "early_stopping": 4},
    "adam+label_smoothing": {"optimizer": lambda: Adam(lr=0.01),
                             "network": {"label_smoothing": 0.1}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_and_resumed_equals_uninterrupted(backend, case, wine, tmp_path):
    opts = dict(CASES[case])
    make_opt = opts.pop("optimizer")
    net_kwargs = opts.pop("network", {})
    kwargs = dict(epochs=9, batch_size=16, verbose=0, **opts)

    def network(seed):
        return gpubp.Network([13, 10, 3], hidden="tanh", seed=seed, backend=backend,
                             **net_kwargs)

    straight = network(1)
    h_straight = straight.fit(wine.X_train, wine.y_train, optimizer=make_opt(), **kwargs)

    path = tmp_path / "run.npz"
    first = network(1)
    with pytest.raises(Interrupt):  # dies at the start of epoch 7; last checkpoint: epoch 5
        first.fit(wine.X_train, wine.y_train, optimizer=make_opt(), checkpoint=path,
                  checkpoint_every=3, callbacks=[_interrupt_at(7)], **kwargs)
    assert checkpoint.load(path).epoch == 5

    resumed = network(12345)  # a different seed: everything must come from the checkpoint
    h_resumed = resumed.fit(wine.X_train, wine.y_train, optimizer=make_opt(), resume=path,
                            **kwargs)
    for got, expected in zip(functools.reduce(operator.iadd, resumed.get_params(), []), functools.reduce(operator.iadd, straight.get_params(), [])):
        np.testing.assert_array_equal(got, expected)
    assert h_resumed.history == h_straight.history
    assert h_resumed.epoch == h_straight.epoch
    assert h_resumed.stop_reason == h_straight.stop_reason
    assert h_resumed.best_epoch == h_straight.best_epoch


def test_checkpoint_contents_and_atomic_write(wine, tmp_path):
    path = tmp_path / "run.npz"
    net = gpubp.Network([13, 5, 3], seed=0, backend="reference")
    net.fit(wine.X_train, wine.y_train, epochs=5, optimizer="adam", checkpoint=path,
            checkpoint_every=2, verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # no temporary file left behind
    state = checkpoint.load(path)
    assert state.epoch == 4  # the last epoch is always written
    assert state.iterations == 5 * int(np.ceil(len(wine.y_train) / 32))
    assert state.optimizer["name"] == "adam" and set(state.optimizer_state) == {
        f"{k}.{i}" for k in ("m", "v") for i in range(4)}
    assert state.rng == net.rng.bit_generator.state
    assert len(state.history) == 5
    model = gpubp.load(path)  # a checkpoint is also a model file
    for got, expected in zip(functools.reduce(operator.iadd, model.get_params(), []), functools.reduce(operator.iadd, net.get_params(), [])):
        np.testing.assert_array_equal(got, expected)


def test_resuming_a_finished_run_changes_nothing(wine, tmp_path):
    path = tmp_path / "run.npz"
    net = gpubp.Network([13, 3], seed=0, backend="reference")
    net.fit(wine.X_train, wine.y_train, epochs=3, checkpoint=path, verbose=0)
    again = gpubp.Network([13, 3], seed=9, backend="reference")
    hist = again.fit(wine.X_train, wine.y_train, epochs=3, resume=path, verbose=0)
    assert len(hist) == 3
    for got, expected in zip(functools.reduce(operator.iadd, again.get_params(), []), functools.reduce(operator.iadd, net.get_params(), [])):
        np.testing.assert_array_equal(got, expected)


def test_resume_continues_to_more_epochs(wine, tmp_path):
    path = tmp_path / "run.npz"
    net = gpubp.Network([13, 3], seed=0, backend="reference")
    net.fit(wine.X_train, wine.y_train, epochs=2, checkpoint=path, verbose=0)
    hist = net.fit(wine.X_train, wine.y_train, epochs=5, resume=path, verbose=0)
    assert hist.epoch == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("change,pattern", [
    ({"sizes": [13, 4, 3]}, r"resume: the network's sizes must match the checkpoint's \(\[13, 5, 3\]\), got \[13, 4, 3\]"),
    ({"optimizer": "adam"}, r"resume: optimizer must match the checkpoint's"),
    ({"lr": 0.2}, r"resume: optimizer must match the checkpoint's"),
    ({"batch_size": 8}, r"resume: batch_size must match the checkpoint's \(32\), got 8"),
    ({"n": 50}, r"resume: the number of training examples must match the checkpoint's \(133\), got 50"),
])
def test_resume_refuses_a_different_run(wine, tmp_path, change, pattern):
    path = tmp_path / "run.npz"
    gpubp.Network([13, 5, 3], seed=0, backend="reference").fit(
        wine.X_train, wine.y_train, epochs=2, checkpoint=path, verbose=0)
    net = gpubp.Network(change.get("sizes", [13, 5, 3]), seed=0, backend="reference")
    n = change.get("n", len(wine.y_train))
    with pytest.raises(ValueError, match=pattern):
        net.fit(wine.X_train[:n], wine.y_train[:n], epochs=4, resume=path, verbose=0,
                optimizer=change.get("optimizer", "sgd"), lr=change.get("lr"),
                batch_size=change.get("batch_size", 32))


def test_resume_of_a_huber_run_is_exact_and_keeps_its_delta(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4))
    Y = X @ rng.normal(size=(4, 2)) + 3 * rng.standard_t(2, size=(60, 2))  # heavy tails

    def network(seed, delta=0.5):
        return gpubp.Network([4, 6, 2], hidden="tanh", output="identity", loss="huber",
                             huber_delta=delta, seed=seed, backend="reference")

    kwargs = dict(epochs=6, batch_size=8, verbose=0, optimizer="adam")
    straight = network(1)
    h_straight = straight.fit(X, Y, **kwargs)
    path = tmp_path / "run.npz"
    with pytest.raises(Interrupt):
        network(1).fit(X, Y, checkpoint=path, callbacks=[_interrupt_at(4)], **kwargs)
    with pytest.raises(ValueError, match=r"resume: the network's huber_delta must match "
                                         r"the checkpoint's \(0\.5\), got 1\.0"):
        network(2, delta=1.0).fit(X, Y, resume=path, **kwargs)
    resumed = network(2)
    assert resumed.fit(X, Y, resume=path, **kwargs).history == h_straight.history
    np.testing.assert_array_equal(resumed.theta, straight.theta)


def test_resume_refuses_another_label_smoothing(wine, tmp_path):
    path = tmp_path / "run.npz"
    gpubp.Network([13, 5, 3], seed=0, backend="reference", label_smoothing=0.1).fit(
        wine.X_train, wine.y_train, epochs=2, checkpoint=path, verbose=0)
    for other in (0.0, 0.2):
        net = gpubp.Network([13, 5, 3], seed=0, backend="reference", label_smoothing=other)
        with pytest.raises(ValueError, match=r"resume: the network's label_smoothing must "
                                             rf"match the checkpoint's \(0\.1\), got {other}"):
            net.fit(wine.X_train, wine.y_train, epochs=4, resume=path, verbose=0)


def test_resume_needs_a_checkpoint_file(wine, tmp_path):
    net = gpubp.Network([13, 3], seed=0, backend="reference")
    net.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        net.fit(wine.X_train, wine.y_train, resume=tmp_path / "model.npz", verbose=0)
    with pytest.raises(FileNotFoundError):
        net.fit(wine.X_train, wine.y_train, resume=tmp_path / "missing.npz", verbose=0)
    with pytest.raises(ValueError, match="checkpoint must be a path in an existing directory"):
        net.fit(wine.X_train, wine.y_train, checkpoint=tmp_path / "no" / "run.npz", verbose=0)
    with pytest.raises(ValueError, match="checkpoint_every must be > 0, got 0"):
        net.fit(wine.X_train, wine.y_train, checkpoint=tmp_path / "r.npz", checkpoint_every=0,
                verbose=0)


def test_resume_keeps_the_patience_early_stopping_has_used(wine, tmp_path):
    """Interrupted with early stopping's patience partly used, the resumed run stops at the
    same epoch and restores the same best parameters as the uninterrupted one."""

    def stopper():
        # A min_delta larger than any change of the loss: only epoch 0 improves, so `wait`
        # grows by one each epoch and the run stops after epoch 4 (patience 4), restoring
        # the parameters of epoch 0. State that matters: a resume that forgot it would
        # start counting again.
        return EarlyStopping(monitor="loss", patience=4, min_delta=1e3, restore_best=True)

    def network(seed):
        return gpubp.Network([13, 6, 3], hidden="tanh", seed=seed, backend="reference")

    kwargs = dict(epochs=12, batch_size=16, verbose=0, optimizer="adam", lr=0.01)
    straight = network(1)
    h_straight = straight.fit(wine.X_train, wine.y_train, early_stopping=stopper(), **kwargs)
    assert h_straight.epoch == [0, 1, 2, 3, 4] and h_straight.best_epoch == 0

    path = tmp_path / "run.npz"
    with pytest.raises(Interrupt):  # dies at the start of epoch 3; checkpoint after epoch 2
        network(1).fit(wine.X_train, wine.y_train, early_stopping=stopper(), checkpoint=path,
                       callbacks=[_interrupt_at(3)], **kwargs)
    (_, saved, _), = checkpoint.load(path).callbacks
    assert saved["wait"] == 2 and saved["best_epoch"] == 0  # patience half used

    resumed = network(7)
    h_resumed = resumed.fit(wine.X_train, wine.y_train, early_stopping=stopper(), resume=path,
                            **kwargs)
    assert h_resumed.epoch == h_straight.epoch
    assert h_resumed.best_epoch == 0 and h_resumed.stop_reason == h_straight.stop_reason
    for got, expected in zip(sum(resumed.get_params(), []), sum(straight.get_params(), [])):
        np.testing.assert_array_equal(got, expected)


def test_early_stopping_state_round_trips(wine):
    stopper = EarlyStopping(monitor="loss", patience=5, min_delta=1e3)
    gpubp.Network([13, 3], seed=0, backend="reference").fit(
        wine.X_train, wine.y_train, epochs=3, verbose=0, early_stopping=stopper)
    config, arrays = stopper.state_dict()
    assert config == {"best": config["best"], "best_epoch": 0, "wait": 2}
    fresh = EarlyStopping(monitor="loss", patience=5, min_delta=1e3)
    fresh.load_state_dict(config, arrays)
    again, again_arrays = fresh.state_dict()
    assert again == config
    assert set(again_arrays) == set(arrays) == {"W0", "b0"}
    for key in arrays:
        np.testing.assert_array_equal(again_arrays[key], arrays[key])
