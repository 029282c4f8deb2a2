"""The fit loop: validation split, early stopping, callbacks, history, input kinds."""

import re

import numpy as np
import pytest

import gpubp
from gpubp import datasets
from gpubp.training.callbacks import Callback, EarlyStopping, LambdaCallback
from tests.conftest import make_problem


@pytest.fixture(scope="module")
def iris():
    return datasets.load("iris")


def test_validation_split_is_held_out_and_stratified(iris):
    seen = {}

    class Spy(Callback):
        def on_train_begin(self, run):
            seen["n"] = run.net._capacity

    net = gpubp.Network([4, 6, 3], seed=0, backend="reference")
    hist = net.fit(iris.X_train, iris.y_train, epochs=2, batch_size=500, validation_split=0.2,
                   verbose=0, callbacks=[Spy()])
    n_val = round(0.2 * len(iris.y_train))
    assert seen["n"] == len(iris.y_train) - n_val  # one full batch = the training part
    assert {"val_loss", "val_accuracy", "loss", "accuracy", "lr"} <= set(hist.history)
    # stratified: the permutation's leading fraction keeps the class proportions
    from gpubp.training.options import split_permutation

    Y = np.eye(3)[iris.y_train]
    perm = split_permutation(np.random.default_rng(1), Y, "cross_entropy")
    counts = np.bincount(iris.y_train[perm[:n_val]], minlength=3)
    expected = np.bincount(iris.y_train) * n_val / len(iris.y_train)
    assert np.all(np.abs(counts - expected) <= 1)
    assert sorted(perm) == list(range(len(perm)))


def test_validation_split_and_data_are_exclusive(iris):
    net = gpubp.Network([4, 3], backend="reference")
    with pytest.raises(ValueError, match="validation_data and validation_split are exclusive"):
        net.fit(iris.X_train, iris.y_train, validation_split=0.1,
                validation_data=(iris.X_test, iris.y_test), verbose=0)
    with pytest.raises(ValueError, match=r"validation_split must be in \[0, 1\), got 1.0"):
        net.fit(iris.X_train, iris.y_train, validation_split=1.0, verbose=0)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_weighted_validation_data_reports_evaluates_weighted_means(iris, backend):
    s = np.random.default_rng(2).uniform(0, 3, size=len(iris.y_test))
    seen = []

    class Record(Callback):  # evaluate with the parameters the epoch's figures saw
        def on_epoch_end(self, run, epoch, logs):
            seen.append((logs, run.net.evaluate(iris.X_test, iris.y_test, sample_weight=s),
                         run.net.evaluate(iris.X_test, iris.y_test)))

    net = gpubp.Network([4, 6, 3], seed=0, backend=backend)
    net.fit(iris.X_train, iris.y_train, epochs=3, verbose=0, callbacks=[Record()],
            validation_data=(iris.X_test, iris.y_test, s))
    for logs, weighted, plain in seen:
        assert logs["val_loss"] == pytest.approx(weighted["loss"], rel=1e-12)
        assert logs["val_accuracy"] == pytest.approx(weighted["accuracy"], rel=1e-12)
        assert logs["val_loss"] != pytest.approx(plain["loss"], rel=1e-6)  # weights count
    unit = gpubp.Network([4, 6, 3], seed=0, backend=backend)
    ones = unit.fit(iris.X_train, iris.y_train, epochs=3, verbose=0,
                    validation_data=(iris.X_test, iris.y_test, np.ones(len(iris.y_test))))
    none = gpubp.Network([4, 6, 3], seed=0, backend=backend).fit(
        iris.X_train, iris.y_train, epochs=3, verbose=0,
        validation_data=(iris.X_test, iris.y_test, None))
    np.testing.assert_allclose(ones.history["val_loss"], none.history["val_loss"], rtol=1e-12)


def test_early_stopping_stops_and_restores_the_best_parameters(iris):
    """A large learning rate makes val_loss bounce; the kept parameters are the best epoch's."""
    snapshots = []
    keep = LambdaCallback(on_epoch_end=lambda run, e, logs: snapshots.append(run.net.get_params()))
    net = gpubp.Network([4, 16, 3], hidden="relu", seed=0, backend="reference")
    stopper = EarlyStopping(monitor="val_loss", patience=3)
    hist = net.fit(iris.X_train, iris.y_train, epochs=200, batch_size=8, lr=0.3,
                   optimizer="momentum", validation_data=(iris.X_test, iris.y_test), verbose=0,
                   callbacks=[keep], early_stopping=stopper)
    assert len(hist) < 200 and "early stopping" in hist.stop_reason
    best = int(np.argmin(hist["val_loss"]))
    assert hist.best_epoch == best == stopper.best_epoch
    assert len(hist) == best + 1 + 3  # patience epochs after the best
    W, b = net.get_params()
    for got, expected in zip(W + b, snapshots[best][0] + snapshots[best][1]):
        np.testing.assert_array_equal(got, expected)
    assert net.evaluate(iris.X_test, iris.y_test)["loss"] == pytest.approx(hist["val_loss"][best], rel=1e-5)


def test_early_stopping_by_argument_monitors_loss_without_validation():
    X, Y = make_problem([3, 2], "cross_entropy", 30)
    net = gpubp.Network([3, 2], seed=0, backend="reference")
    hist = net.fit(X, Y, epochs=5, verbose=0, early_stopping=2)
    assert len(hist) == 5 and hist.best_epoch == int(np.argmin(hist["loss"]))
    with pytest.raises(TypeError, match="early_stopping must be None, a bool"):
        net.fit(X, Y, epochs=1, verbose=0, early_stopping="yes")


def test_early_stopping_mode_and_missing_figure():
    assert EarlyStopping("val_accuracy").mode == "max"
    assert EarlyStopping("loss").mode == "min"
    with pytest.raises(ValueError, match=r"mode must be 'auto', 'min' or 'max', got 'up'"):
        EarlyStopping(mode="up")
    X, Y = make_problem([3, 2], "cross_entropy", 10)
    net = gpubp.Network([3, 2], seed=0, backend="reference")
    with pytest.raises(ValueError, match=r"EarlyStopping monitors 'val_loss'.*available"):
        net.fit(X, Y, epochs=2, verbose=0, early_stopping=EarlyStopping("val_loss"))


def test_callback_hooks_run_in_order_and_can_stop():
    calls = []

    class Recorder(Callback):
        def on_train_begin(self, run):
            calls.append("begin")

        def on_epoch_begin(self, run, epoch):
            calls.append(f"e{epoch}")

        def on_epoch_end(self, run, epoch, logs):
            calls.append(f"end{epoch}:{sorted(logs)}")
            if epoch == 1:
                run.stop("enough")

        def on_train_end(self, run):
            calls.append("done")

    X, Y = make_problem([3, 2], "cross_entropy", 10)
    hist = gpubp.Network([3, 2], seed=0, backend="reference").fit(
        X, Y, epochs=5, verbose=0, callbacks=Recorder())
    assert calls == ["begin", "e0", "end0:['accuracy', 'loss', 'lr']", "e1",
                     "end1:['accuracy', 'loss', 'lr']", "done"]
    assert len(hist) == 2 and hist.stop_reason == "enough"
    with pytest.raises(TypeError, match="callbacks must be Callback instances, got int at position 0"):
        gpubp.Network([3, 2]).fit(X, Y, verbose=0, callbacks=[3])


def test_history_records_every_epoch_and_round_trips():
    X, Y = make_problem([3, 2], "cross_entropy", 12)
    hist = gpubp.Network([3, 2], seed=0, backend="reference").fit(
        X, Y, epochs=3, verbose=0, validation_split=0.25)
    assert hist.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in hist.history.values())
    again = gpubp.History.from_dict(hist.to_dict())
    assert again.history == hist.history and again.epoch == hist.epoch
    assert "epochs=3" in repr(hist)


class _ArrayLike:
    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


class _DLPackOnly:
    """A producer with only the DLPack protocol (like some framework tensors)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


@pytest.mark.parametrize("wrap", [lambda a: a.tolist(), _ArrayLike, _DLPackOnly])
def test_inputs_of_every_kind_train_alike(wrap):
    X, Y = make_problem([3, 2], "cross_entropy", 16)
    y = Y.argmax(axis=1)
    results = []
    for wrapped in (wrap, lambda a: a):
        net = gpubp.Network([3, 2], seed=0, dtype="float64", backend="reference")
        net.fit(wrapped(X), wrapped(y), epochs=2, verbose=0)
        results.append(net.get_params()[0][0])
        np.testing.assert_array_equal(net.predict(wrapped(X)), net.predict(X))
    np.testing.assert_array_equal(*results)


def test_verbose_1_is_quiet_when_not_a_terminal(capsys):
    X, Y = make_problem([3, 2], "cross_entropy", 10)
    gpubp.Network([3, 2], seed=0, backend="reference").fit(X, Y, epochs=3, verbose=1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


class _ExplodeFrom(gpubp.optim.schedules.Schedule):
    """A sane learning rate until ``epoch``, then one that makes any run diverge."""

    name = "explode"

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, base_lr, epoch, epochs):
        return base_lr if epoch < self.epoch else 1e6

    def get_config(self):
        return {"name": self.name, "epoch": self.epoch}


def test_diverging_run_keeps_the_epoch_checkpoint_free(tmp_path):
    """Divergence raises before any checkpoint of the bad epoch is written: the file holds
    the last good epoch, with finite parameters, and is a working checkpoint."""
    X, Y = make_problem([3, 1], "mse", 40)
    net = gpubp.Network([3, 8, 1], hidden="relu", output="identity", seed=0, backend="reference")
    path = tmp_path / "run.npz"
    with pytest.raises(gpubp.TrainingDiverged) as info:
        net.fit(X, Y, epochs=50, lr=0.01, schedule=_ExplodeFrom(3), verbose=0, checkpoint=path)
    diverged = int(re.search(r"training diverged in epoch (\d+)", str(info.value)).group(1))
    assert diverged >= 3
    assert path.exists()
    from gpubp.training import checkpoint

    state = checkpoint.load(path)
    assert state.epoch == diverged - 1  # the last finished epoch, not the diverged one
    assert all(np.isfinite(w).all() for w in state.W + state.b)
    assert all(np.isfinite(w).all() for w in sum(net.get_params(), []))


def test_unit_sample_weights_and_a_penalty_train_alike_on_every_path(iris):
    """sample_weight takes the per-kernel step, the compiled epoch takes the optimizer's
    penalty: unit weights change nothing, and both record the penalty's share of the loss."""
    from gpubp.optim.optimizers import Adam
    from gpubp.training import loop

    runs = []
    for weights in (None, np.ones(len(iris.y_train))):
        net = gpubp.Network([4, 6, 3], seed=0, dtype="float64")
        hist = loop.fit(net, iris.X_train, iris.y_train, epochs=3, batch_size=16, verbose=0,
                        optimizer=Adam(lr=0.01, penalty=0.3, eps_hat=True),
                        sample_weight=weights, rng=np.random.RandomState(0))
        runs.append((net.theta.copy(), hist.history))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-10, atol=1e-12)
    for key in ("loss", "penalty"):
        np.testing.assert_allclose(runs[0][1][key], runs[1][1][key], rtol=1e-10)
    assert all(0 < p < loss for p, loss in zip(runs[0][1]["penalty"], runs[0][1]["loss"]))


def test_rng_shuffles_the_epochs_and_diverged_continue_trains_on():
    from gpubp.training import loop

    X, Y = make_problem([3, 4, 2], "cross_entropy", 20)
    orders = []

    class Spy(Callback):
        def on_epoch_end(self, run, epoch, logs):
            orders.append(logs["loss"])

    for _ in range(2):
        net = gpubp.Network([3, 4, 2], seed=1)
        loop.fit(net, X, Y, epochs=2, batch_size=5, verbose=0, rng=np.random.RandomState(7),
                 callbacks=[Spy()])
    assert orders[:2] == orders[2:]
    with pytest.raises(ValueError, match="rng is not recorded"):
        loop.fit(net, X, Y, epochs=1, verbose=0, rng=np.random.RandomState(0),
                 checkpoint="x.ckpt")
    with pytest.raises(ValueError, match="diverged must be"):
        loop.fit(net, X, Y, epochs=1, verbose=0, diverged="ignore")
    net = gpubp.Network([3, 4, 2], hidden="identity", output="identity", seed=1)
    with np.errstate(all="ignore"):
        hist = loop.fit(net, X, Y, epochs=30, batch_size=5, verbose=0, lr=50.0,
                        diverged="continue")
    assert len(hist.history["loss"]) == 30 and not np.isfinite(hist.history["loss"][-1])
