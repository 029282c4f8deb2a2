"""AdamW, RMSprop, clipping and per-step schedules in training: the compiled epoch equals
the per-kernel steps (and ``fit`` takes it: no silent fallback), the reference and cpu
backends record the same run, the simulated CUDA backend too (tests/cudasim_optim.py),
a resumed run equals an uninterrupted one, and bad arguments are refused by name."""

import numpy as np
import pytest
from tests.conftest import make_problem, randomize_biases

import gpubp
from gpubp.core import compiled
from gpubp.optim.optimizers import SGD, Adam, AdamW, RMSprop, from_config, get_optimizer
from gpubp.optim.schedules import LinearWarmup, OneCycle, WarmupCosine, get_schedule
from gpubp.training.callbacks import LambdaCallback, ReduceLROnPlateau

OPTIMIZERS = {
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.1),
    "rmsprop": lambda: RMSprop(lr=0.01),
    "rmsprop-momentum-centered": lambda: RMSprop(lr=0.005, momentum=0.9, centered=True,
                                                 weight_decay=0.01),
    # clipping turns plain SGD's fused step off: the gradient must be whole first
    "sgd-clip-norm": lambda: SGD(lr=0.5).set_clipping(clip_norm=0.05),
    "adam-clip-value": lambda: Adam(lr=0.01).set_clipping(clip_value=0.01),
    "rmsprop-clip-norm": lambda: RMSprop(lr=0.01, momentum=0.5).set_clipping(clip_norm=0.05),
    # per-step rates: plain SGD keeps its fused step, with the rate of each step
    "sgd-one-cycle": lambda: SGD(lr=0.5, schedule=OneCycle()),
    "adamw-warmup-cosine-clip": lambda: AdamW(lr=0.02, schedule=WarmupCosine(2, min_lr=1e-3))
    .set_clipping(clip_norm=0.1),
    "momentum-warmup": lambda: SGD(lr=0.1, momentum=0.9, schedule=LinearWarmup(4, 0.1)),
}
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}
EPOCHS, P, B = 3, 23, 8  # batches of 8, 8 and 7


def _per_kernel_epoch(net, opt, X, Y, order):
    total, correct = 0.0, 0
    for start in range(0, len(order), B):
        cost, rows = net._train_step(opt, X, Y, order[start:start + B])
        total += cost * rows
        correct += int(net._count_correct(rows))
    return total, correct


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("hidden", ["tanh", "relu"])
def test_compiled_epoch_equals_the_per_kernel_steps(hidden, name, dtype):
    sizes = [6, 5, 4, 3]
    X, Y = (a.astype(dtype) for a in make_problem(sizes, "cross_entropy", P, seed=1))
    ref, fast = (randomize_biases(gpubp.Network(sizes, hidden=hidden, backend="cpu",
                                                dtype=dtype, seed=2)) for _ in range(2))
    opt_ref, opt_fast = OPTIMIZERS[name](), OPTIMIZERS[name]()
    order = np.random.default_rng(4).permutation(P)
    for epoch in range(EPOCHS):
        lrs = [opt.start_epoch(epoch, EPOCHS, 3) for opt in (opt_ref, opt_fast)]
        assert lrs[0] == lrs[1]
        expected = _per_kernel_epoch(ref, opt_ref, X, Y, order)
        got = compiled.train_epoch(fast, opt_fast, X, Y, order, B)
        np.testing.assert_allclose(got[0], expected[0], **TOL[dtype])
        assert got[1] == expected[1]
    assert opt_fast.iterations == opt_ref.iterations == 3 * EPOCHS
    np.testing.assert_allclose(fast.theta, ref.theta, **TOL[dtype])
    np.testing.assert_allclose(fast.nabla_theta, ref.nabla_theta, **TOL[dtype])
    for key in opt_ref.state_names:
        np.testing.assert_allclose(opt_fast.flat_state[key], opt_ref.flat_state[key],
                                   **TOL[dtype])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fit_takes_the_compiled_epoch_and_equals_the_reference_backend(name, monkeypatch):
    calls = []
    original = compiled.train_epoch
    monkeypatch.setattr(compiled, "train_epoch",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    X, Y = make_problem([5, 7, 3], "cross_entropy", 50, seed=3)
    runs = {}
    for backend in ("reference", "cpu"):
        net = gpubp.Network([5, 7, 3], hidden="relu", backend=backend, dtype="float64",
                            seed=1)
        history = net.fit(X, Y, epochs=3, batch_size=16, verbose=0,
                          optimizer=OPTIMIZERS[name]())
        runs[backend] = (net.theta.copy(), history)
    assert len(calls) == 3  # the cpu run's every epoch, none of the reference's
    np.testing.assert_allclose(runs["cpu"][0], runs["reference"][0], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(runs["cpu"][1]["loss"], runs["reference"][1]["loss"],
                               rtol=1e-12)
    assert runs["cpu"][1]["lr"] == runs["reference"][1]["lr"]


def test_fit_clip_options_reach_the_optimizer_and_change_the_run():
    X, Y = make_problem([5, 7, 3], "cross_entropy", 40, seed=3)
    thetas = []
    for clip in ({}, {"clip_norm": 0.01}, {"clip_value": 1e-3}):
        net = gpubp.Network([5, 7, 3], dtype="float64", seed=1)
        net.fit(X, Y, epochs=2, batch_size=8, verbose=0, optimizer="adamw", **clip)
        thetas.append(net.theta.copy())
    assert not np.allclose(thetas[0], thetas[1]) and not np.allclose(thetas[0], thetas[2])


def test_per_step_schedule_history_records_each_epochs_first_rate():
    X, Y = make_problem([5, 7, 3], "cross_entropy", 40, seed=3)
    net = gpubp.Network([5, 7, 3], dtype="float64", seed=1)
    schedule = WarmupCosine(3, min_lr=0.0)
    history = net.fit(X, Y, epochs=3, batch_size=8, verbose=0, lr=0.1, schedule=schedule)
    # 5 steps per epoch: the rates of steps 0, 5 and 10 of 15
    assert history["lr"] == [schedule(0.1, t, 15) for t in (0, 5, 10)]


def test_cuda_kernels_and_fit_in_the_simulator():
    from tests.test_cuda_kernels import TESTS, run_simulated

    run_simulated(TESTS / "cudasim_optim.py", timeout=900)


# -- resume --------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


RESUMED = {
    "rmsprop-centered-momentum-one-cycle-clip": dict(
        optimizer=lambda: RMSprop(lr=0.01, momentum=0.9, centered=True, schedule=OneCycle()),
        clip_norm=0.5),
    "adamw-warmup-cosine-plateau": dict(
        optimizer=lambda: AdamW(lr=0.01, schedule=WarmupCosine(5)),
        callbacks=lambda: [ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                             threshold=0.5)]),
}


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("case", list(RESUMED))
def test_interrupted_and_resumed_equals_uninterrupted(backend, case, tmp_path):
    X, Y = make_problem([6, 8, 3], "cross_entropy", 60, seed=5)
    spec = RESUMED[case]

    def fit(net, **extra):
        callbacks = spec["callbacks"]() if "callbacks" in spec else []
        options = {k: v for k, v in spec.items() if k not in ("optimizer", "callbacks")}
        return net.fit(X, Y, epochs=6, batch_size=16, verbose=0, optimizer=spec["optimizer"](),
                       callbacks=callbacks + extra.pop("more", []), **options, **extra)

    def network(seed):
        return gpubp.Network([6, 8, 3], hidden="tanh", seed=seed, backend=backend,
                             dtype="float64")

    straight = network(1)
    h_straight = fit(straight)
    path = tmp_path / "run.npz"

    def interrupt(run, epoch):
        if epoch == 4:
            raise Interrupt

    with pytest.raises(Interrupt):  # the last checkpoint is that of epoch 3
        fit(network(1), checkpoint=path, more=[LambdaCallback(on_epoch_begin=interrupt)])
    resumed = network(999)
    h_resumed = fit(resumed, resume=path)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    assert h_resumed.history == h_straight.history
    if "callbacks" in spec:  # the plateau did reduce the rate, and after the cut too
        unreduced = [WarmupCosine(5)(0.01, 4 * e, 24) for e in range(6)]  # 4 steps an epoch
        reduced = [e for e in range(6) if h_straight["lr"][e] < 0.99 * unreduced[e]]
        assert reduced and reduced[-1] >= 4, (h_straight["lr"], unreduced)


def test_reduce_lr_on_plateau_in_fit_halves_the_rate_after_a_bad_epoch():
    X, Y = make_problem([5, 7, 3], "cross_entropy", 40, seed=3)
    net = gpubp.Network([5, 7, 3], dtype="float64", seed=1)
    # no epoch improves the loss by half: epoch 1 is bad, the rate halves for epoch 2, ...
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, threshold=0.5)
    history = net.fit(X, Y, epochs=4, batch_size=8, verbose=0, lr=0.1, callbacks=[plateau])
    assert history["lr"] == [0.1, 0.1, 0.05, 0.025]
    assert plateau.lr == 0.0125  # the rate the next epoch would take


def test_optimizer_configs_round_trip_with_their_clipping():
    for make in OPTIMIZERS.values():
        opt = make()
        again = from_config(opt.get_config())
        assert type(again) is type(opt) and again.get_config() == opt.get_config()
        assert (again.clip_norm, again.clip_value) == (opt.clip_norm, opt.clip_value)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("make,exc,pattern", [
    (lambda: RMSprop(alpha=1.0), ValueError, r"alpha must be in \[0, 1\), got 1.0"),
    (lambda: RMSprop(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\), got -0.1"),
    (lambda: RMSprop(centered="yes"), TypeError, r"centered must be True or False, got 'yes'"),
    (lambda: RMSprop(eps=0), ValueError, r"eps must be > 0"),
    (lambda: AdamW(weight_decay=-1), ValueError, r"weight_decay must be >= 0"),
    (lambda: SGD().set_clipping(clip_norm=-1.0), ValueError, r"clip_norm must be >= 0"),
    (lambda: SGD().set_clipping(clip_value="big"), TypeError, r"clip_value"),
    (lambda: SGD().set_clipping(1.0, 0.5), ValueError, r"clip_norm and clip_value are "
                                                      r"exclusive, got clip_norm=1.0"),
    (lambda: LinearWarmup(0), ValueError, r"warmup_steps must be > 0, got 0"),
    (lambda: LinearWarmup(5, start_factor=0), ValueError, r"start_factor must be > 0"),
    (lambda: LinearWarmup(5, start_factor=2), ValueError, r"start_factor must be in \(0, 1\]"),
    (lambda: WarmupCosine(5)(0.1, 7, 5), ValueError, r"warmup_steps \(5\) must be fewer "
                                                     r"than the run's 5 steps"),
    (lambda: OneCycle(pct_start=1.0), ValueError, r"pct_start must be in \(0, 1\), got 1.0"),
    (lambda: OneCycle(anneal_strategy="exp"), ValueError, r"anneal_strategy must be 'cos' or "
                                                          r"'linear', got 'exp'"),
    (lambda: get_schedule("warmup_linear"), ValueError, r"schedule must be one of .*"
                                                        r"'one_cycle'.*got 'warmup_linear'"),
    (lambda: SGD(schedule="warmup").start_epoch(0, 3), ValueError,
     r"steps_per_epoch: the per-step schedule .* needs the steps of an epoch, got None"),
    (lambda: SGD(schedule="one_cycle").step_lrs(2), ValueError, r"needs the run's length"),
    (lambda: ReduceLROnPlateau(factor=1.0), ValueError, r"factor must be in \(0, 1\), got 1.0"),
    (lambda: ReduceLROnPlateau(threshold_mode="x"), ValueError, r"threshold_mode must be"),
    (lambda: ReduceLROnPlateau(mode="up"), ValueError, r"mode must be 'auto', 'min' or 'max'"),
    (lambda: ReduceLROnPlateau(patience=1.5), TypeError, r"patience must be an integer"),
    (lambda: ReduceLROnPlateau(monitor=3), TypeError, r"monitor must be a history key"),
    (lambda: get_optimizer("adamw", clip=(0.0, -2.0)), ValueError, r"clip_value must be >= 0"),
])
def test_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_fit_refuses_both_clips_and_a_negative_one():
    X, Y = make_problem([5, 3], "cross_entropy", 10)
    net = gpubp.Network([5, 3], seed=0)
    with pytest.raises(ValueError, match="clip_norm and clip_value are exclusive"):
        net.fit(X, Y, epochs=1, verbose=0, clip_norm=1.0, clip_value=1.0)
    with pytest.raises(ValueError, match=r"clip_norm must be >= 0, got -1"):
        net.fit(X, Y, epochs=1, verbose=0, clip_norm=-1)


def test_a_clip_by_the_norm_cannot_update_a_span():
    from gpubp.backends import get_backend

    be = get_backend("cpu", "reference")
    opt = SGD(lr=0.1).set_clipping(clip_norm=1.0)
    theta, nabla = np.zeros(6), np.ones(6)
    assert not opt.elementwise and SGD().elementwise
    with pytest.raises(ValueError, match="span: a clip by the global norm reads the whole"):
        opt.step(be, [theta], [nabla], theta=theta, nabla_theta=nabla, span=slice(0, 3))
