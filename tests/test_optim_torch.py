"""AdamW, RMSprop, gradient clipping and the per-step schedules, step by step against
PyTorch on the same gradients (float64, rtol 1e-10): ``torch.optim``,
``torch.nn.utils.clip_grad_norm_``/``clip_grad_value_`` and ``torch.optim.lr_scheduler``,
on every CPU backend (so each fused kernel, reference and Numba, is exercised)."""

import warnings

import numpy as np
import pytest
import torch

from gpubp.backends import get_backend
from gpubp.optim.optimizers import SGD, Adam, AdamW, RMSprop
from gpubp.optim.schedules import LinearWarmup, OneCycle, WarmupCosine
from gpubp.training.callbacks import ReduceLROnPlateau, Run

SHAPES = [(3, 4), (4,), (4, 2), (2,)]  # W^1, b^1, W^2, b^2: the flat θ of a 3-4-2 network
N = sum(int(np.prod(s)) for s in SHAPES)
STEPS = 12
TOL = dict(rtol=1e-10, atol=1e-13)


def _blocks(flat):
    out, start = [], 0
    for shape in SHAPES:
        size = int(np.prod(shape))
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def _gradients(seed=0, scales=None):
    """``STEPS`` flat gradients; ``scales`` (per step) make some large, some small."""
    rng = np.random.default_rng(seed)
    scales = np.ones(STEPS) if scales is None else scales
    return [rng.normal(size=N) * s for s in scales]


def _theta0():
    return np.random.default_rng(42).normal(size=N)


def _ours(backend_name, opt, grads, epochs=1):
    """θ after each step of ``opt`` over the flat gradients, on ``backend_name``."""
    be = get_backend("cpu", backend_name)
    theta = be.to_device(_theta0())
    nabla = be.zeros((N,), np.float64)
    params, views = _blocks(theta), _blocks(nabla)
    opt.start_epoch(0, epochs, len(grads) // epochs)
    trajectory = []
    for g in grads:
        be.to_device(g, out=nabla)
        opt.step(be, params, views, theta=theta, nabla_theta=nabla)
        trajectory.append(be.to_host(theta).copy())
    return trajectory


def _torch(make, grads, clip=None, scheduler=None):
    """θ after each step of the torch optimizer ``make(params)`` on the same gradients."""
    params = [torch.tensor(b.copy(), requires_grad=True) for b in _blocks(_theta0())]
    opt = make(params)
    sched = scheduler(opt) if scheduler else None
    trajectory = []
    for g in grads:
        for p, block in zip(params, _blocks(g)):
            p.grad = torch.tensor(block.copy())
        if clip is not None:
            clip(params)
        opt.step()
        if sched is not None:
            sched.step()
        trajectory.append(torch.cat([p.detach().reshape(-1) for p in params]).numpy().copy())
    return trajectory


def _assert_same(got, expected):
    for t, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, **TOL, err_msg=f"step {t + 1}")


OPTIMIZERS = {
    "adamw": (lambda: AdamW(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-7, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.95), eps=1e-7,
                                          weight_decay=0.1)),
    "adamw-default": (lambda: AdamW(lr=0.05),
                      lambda p: torch.optim.AdamW(p, lr=0.05)),
    "rmsprop": (lambda: RMSprop(lr=0.01),
                lambda p: torch.optim.RMSprop(p, lr=0.01)),
    "rmsprop-momentum": (lambda: RMSprop(lr=0.01, alpha=0.9, momentum=0.9),
                         lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.9)),
    "rmsprop-centered": (lambda: RMSprop(lr=0.01, centered=True, eps=1e-6),
                         lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True, eps=1e-6)),
    "rmsprop-all": (lambda: RMSprop(lr=0.02, alpha=0.8, momentum=0.5, centered=True,
                                    weight_decay=0.05),
                    lambda p: torch.optim.RMSprop(p, lr=0.02, alpha=0.8, momentum=0.5,
                                                  centered=True, weight_decay=0.05)),
    "adam": (lambda: Adam(lr=0.01, weight_decay=0.01),
             lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
    "momentum": (lambda: SGD(lr=0.05, momentum=0.9, weight_decay=0.01),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_step_equals_torch_optim(backend, name):
    ours, theirs = OPTIMIZERS[name]
    grads = _gradients()
    _assert_same(_ours(backend, ours(), grads), _torch(theirs, grads))


def test_adamw_decays_every_parameter_biases_too(backend):
    # a zero gradient leaves only the decay: θ ← (1 − lr λ) θ for W and b alike (PyTorch's
    # AdamW over all the parameters it is given)
    opt = AdamW(lr=0.1, weight_decay=0.5)
    got = _ours(backend, opt, [np.zeros(N)])[0]
    np.testing.assert_allclose(got, _theta0() * (1 - 0.1 * 0.5), rtol=1e-15)


# some steps far above the bound, some below: the clip acts on some steps and not others
SCALES = np.array([5.0, 0.01, 3.0, 0.02, 1.0, 10.0, 0.05, 2.0, 0.1, 4.0, 0.03, 1.5])


@pytest.mark.parametrize("name", ["momentum", "adamw", "rmsprop-all"])
@pytest.mark.parametrize("max_norm", [0.5, 1.0])
def test_clip_norm_equals_clip_grad_norm(backend, name, max_norm):
    ours, theirs = OPTIMIZERS[name]
    grads = _gradients(1, SCALES)
    norms = [np.linalg.norm(g) for g in grads]
    assert min(norms) < max_norm < max(norms)  # both kinds of step are exercised
    got = _ours(backend, ours().set_clipping(clip_norm=max_norm), grads)
    expected = _torch(theirs, grads,
                      clip=lambda p: torch.nn.utils.clip_grad_norm_(p, max_norm))
    _assert_same(got, expected)
    unclipped = _ours(backend, ours(), grads)
    assert not np.allclose(unclipped[-1], got[-1])


@pytest.mark.parametrize("name", ["momentum", "rmsprop"])
def test_clip_value_equals_clip_grad_value(backend, name):
    ours, theirs = OPTIMIZERS[name]
    grads = _gradients(2, SCALES)
    got = _ours(backend, ours().set_clipping(clip_value=0.3), grads)
    expected = _torch(theirs, grads,
                      clip=lambda p: torch.nn.utils.clip_grad_value_(p, 0.3))
    _assert_same(got, expected)


def test_the_clip_kernels_leave_the_clipped_gradient_and_return_the_norm(backend):
    be = get_backend("cpu", backend)
    g = np.random.default_rng(3).normal(size=N) * 4
    flat = be.to_device(g.copy())
    norm = be.kernels.clip_gradient(flat, 1.0, 0.0)
    np.testing.assert_allclose(norm, np.linalg.norm(g), rtol=1e-14)
    np.testing.assert_allclose(be.to_host(flat), g / (np.linalg.norm(g) + 1e-6), rtol=1e-14)
    small = be.to_device(g * 1e-3)
    be.kernels.clip_gradient(small, 1.0, 0.0)  # under the bound: unchanged
    np.testing.assert_array_equal(be.to_host(small), g * 1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_clip_norm_of_float32_sums_float64_squares(backend, dtype):
    """‖(3e19, 4e19)‖ = 5e19 on every backend: float32 squares overflow at 1.8e19 (a
    float32 dot, or Numba's ``float()`` of a float32, which stays float32, gave inf, and
    ``clip_grad_norm_``'s factor 0 then erased the step), and a float32 vector's norm is as
    exact as its float64 sum: (1 + 2^-12)² rounded to float32 loses 2^-24, ten thousand
    times over."""
    be = get_backend("cpu", backend)
    huge = be.to_device(np.array([3e19, 4e19, 0.0], dtype))
    assert be.kernels.clip_gradient(huge, 1.0, 0.0) == pytest.approx(5e19, rel=1e-7)
    np.testing.assert_allclose(be.to_host(huge), [0.6, 0.8, 0.0], rtol=1e-6)
    g = np.full(10_001, 1 + 2.0**-12, dtype)
    want = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    got = be.kernels.clip_gradient(be.to_device(g), 0.0, 0.0)
    assert got == pytest.approx(want, rel=1e-15)


# -- schedules per step ---------------------------------------------------------------------
def _torch_lrs(make_scheduler, steps, lr):
    """The rate of each of ``steps`` steps under a torch scheduler stepped once per step."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr)
    sched = make_scheduler(opt)
    lrs = []
    with warnings.catch_warnings():
        # SequentialLR steps its second scheduler with an epoch argument, which PyTorch
        # deprecates in a UserWarning; the rates are what is compared
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return np.array(lrs)


def _our_lrs(schedule, epochs, steps_per_epoch, lr):
    opt = SGD(lr=lr, schedule=schedule)
    lrs = []
    for epoch in range(epochs):
        first = opt.start_epoch(epoch, epochs, steps_per_epoch)
        assert first == opt.step_lrs(1)[0]
        lrs.extend(opt.step_lrs(steps_per_epoch))
        opt.iterations += steps_per_epoch
    return np.array(lrs)


SCHEDULES = {
    "warmup": (lambda: LinearWarmup(7, start_factor=0.1),
               lambda o, T: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1,
                                                              total_iters=7)),
    "warmup-default": (lambda: LinearWarmup(5),
                       lambda o, T: torch.optim.lr_scheduler.LinearLR(o, total_iters=5)),
    "warmup-cosine": (lambda: WarmupCosine(6, min_lr=0.001, start_factor=0.05),
                      lambda o, T: torch.optim.lr_scheduler.SequentialLR(o, [
                          torch.optim.lr_scheduler.LinearLR(o, start_factor=0.05,
                                                            total_iters=6),
                          torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T - 6,
                                                                     eta_min=0.001)],
                          milestones=[6])),
    "one-cycle": (lambda: OneCycle(),
                  lambda o, T: torch.optim.lr_scheduler.OneCycleLR(
                      o, max_lr=0.2, total_steps=T, cycle_momentum=False)),
    "one-cycle-linear-3": (lambda: OneCycle(pct_start=0.25, anneal_strategy="linear",
                                            div_factor=10, final_div_factor=100,
                                            three_phase=True),
                           lambda o, T: torch.optim.lr_scheduler.OneCycleLR(
                               o, max_lr=0.2, total_steps=T, pct_start=0.25,
                               anneal_strategy="linear", div_factor=10,
                               final_div_factor=100, three_phase=True,
                               cycle_momentum=False)),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_per_step_rates_equal_torch_schedulers(name):
    ours, theirs = SCHEDULES[name]
    epochs, per_epoch = 4, 9
    T = epochs * per_epoch
    expected = _torch_lrs(lambda o: theirs(o, T), T, 0.2)
    got = _our_lrs(ours(), epochs, per_epoch, 0.2)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)
    assert np.ptp(got) > 0.05  # the rate does move within the run


def test_warmup_cosine_steps_equal_torch(backend):
    # the rates drive the updates: RMSprop under a per-step schedule, both sides
    grads = _gradients(4)
    got = _ours(backend, RMSprop(lr=0.05, schedule=WarmupCosine(4, min_lr=0.01)), grads)
    expected = _torch(lambda p: torch.optim.RMSprop(p, lr=0.05), grads, scheduler=lambda o:
                      torch.optim.lr_scheduler.SequentialLR(o, [
                          torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 3,
                                                            total_iters=4),
                          torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS - 4,
                                                                     eta_min=0.01)],
                          milestones=[4]))
    _assert_same(got, expected)


# -- ReduceLROnPlateau -------------------------------------------------------------------
PLATEAU = [1.0, 0.9, 0.95, 0.9, 0.91, 0.9, 0.899995, 0.92, 0.8, 0.85, 0.86, 0.87, 0.88,
           0.7999, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86]


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(factor=0.5, patience=1),
    dict(factor=0.5, patience=0, cooldown=2),
    dict(factor=0.3, patience=1, threshold=0.01, threshold_mode="abs", min_lr=0.01),
    dict(factor=0.5, patience=1, mode="max"),
])
def test_reduce_lr_on_plateau_equals_torch(kwargs):
    torch_kwargs = {("mode" if k == "mode" else k): v for k, v in kwargs.items()}
    torch_kwargs.setdefault("patience", 10)
    param = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **torch_kwargs)
    opt = SGD(lr=0.1)
    callback = ReduceLROnPlateau(monitor="loss", **kwargs)
    run = Run(None, opt, None, len(PLATEAU))
    callback.on_train_begin(run)
    series = PLATEAU * 2
    reduced = 0
    for epoch, value in enumerate(series):
        sched.step(value)
        callback.on_epoch_end(run, epoch, {"loss": value})
        opt.start_epoch(epoch + 1, len(series))
        assert opt.current_lr() == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12), epoch
        reduced += opt.current_lr() < 0.1
    if kwargs:
        assert reduced  # the plateaus are long enough to reduce the rate


def test_reduce_lr_on_plateau_names_a_missing_figure():
    callback = ReduceLROnPlateau()
    run = Run(None, SGD(), None, 1)
    with pytest.raises(ValueError, match=r"monitors 'val_loss'.*available: \['loss'\]"):
        callback.on_epoch_end(run, 0, {"loss": 1.0})
