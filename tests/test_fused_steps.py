"""Every optimizer's step fused into the compiled epoch's backward pass (issue 20).

Momentum, Nesterov, Adam, AdamW and RMSprop step each layer's ``W^l`` and ``b^l`` right
after their gradients (``FUSED_STEP`` in gpubp.kernels.cpu_epoch_update). The unfused
path, one pass over the flat vector after the backward pass, is what a clipped gradient
still takes: a ``clip_norm`` no gradient reaches scales by exactly 1, so it is the
unfused path with the same arithmetic. Both must give the same bits: parameters,
optimizer state, the last gradient left in ``nabla``, the cost.
"""

import numpy as np
import pytest
from tests.conftest import make_problem, randomize_biases

import gpubp
from gpubp.core import compiled
from gpubp.kernels import cpu_epoch_update
from gpubp.optim import schedules
from gpubp.optim.optimizers import SGD, Adam, AdamW, RMSprop

OPTIMIZERS = {  # each with weight decay; the penalty (alpha) where the optimizer has one
    "momentum": lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.01, penalty=0.2),
    "nesterov": lambda: SGD(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.02),
    "adam": lambda: Adam(lr=0.01, weight_decay=1e-3, penalty=0.2),
    "adam-sklearn": lambda: Adam(lr=0.01, weight_decay=1e-3, penalty=0.2, eps_hat=True),
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.05),
    "rmsprop": lambda: RMSprop(lr=0.01, weight_decay=1e-3),
    "rmsprop-centered": lambda: RMSprop(lr=0.01, momentum=0.5, centered=True,
                                        weight_decay=1e-3),
}
SIZES = [6, 5, 4, 3]
UNREACHABLE = 1e300  # clip_norm: the unfused path, gradient scaled by exactly 1


def _run(name, dtype, clip_norm, per_step):
    net = randomize_biases(gpubp.Network(SIZES, hidden="tanh", output="softmax",
                                         loss="cross_entropy", backend="cpu", dtype=dtype,
                                         seed=2))
    opt = OPTIMIZERS[name]()
    if per_step:  # a rate per step, handed to the compiled epoch as Update.lrs
        opt.schedule = schedules.LinearWarmup(warmup_steps=4, start_factor=0.25)
    if clip_norm:
        opt.set_clipping(clip_norm=clip_norm)
    X, Y = make_problem(SIZES, "cross_entropy", 23, seed=3)
    X, Y = X.astype(dtype), Y.astype(dtype)
    order = np.random.default_rng(4).permutation(23)  # batches of 8, 8 and 7
    costs = []
    for epoch in range(2):
        opt.start_epoch(epoch, 2, 3)
        costs.append(compiled.train_epoch(net, opt, X, Y, order, 8))
    return net, opt, costs


@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fused_steps_equal_the_pass_over_theta_bit_for_bit(name, dtype, per_step):
    fused, opt_f, costs_f = _run(name, dtype, 0.0, per_step)
    flat, opt_u, costs_u = _run(name, dtype, UNREACHABLE, per_step)
    assert opt_f.iterations == opt_u.iterations == 6
    np.testing.assert_array_equal(fused.theta, flat.theta)
    np.testing.assert_array_equal(fused.nabla_theta, flat.nabla_theta)  # the last gradient
    for key in opt_u.state_names:
        np.testing.assert_array_equal(opt_f.flat_state[key], opt_u.flat_state[key])
    assert costs_f == costs_u
    assert np.any(fused.nabla_theta != 0) and np.isfinite(fused.theta).all()


@pytest.mark.parametrize("name,clip_norm", [("momentum", 0.0), ("adam", 0.0),
                                            ("adam", UNREACHABLE)])
def test_the_step_is_taken_per_layer_in_the_backward_pass(name, clip_norm, monkeypatch):
    """The epoch run as Python (its helpers' own Python functions), the per-layer step and
    the flat pass recorded: without a clip, every step steps layers L..1 inside the
    backward pass and never runs the flat pass; with one, the reverse."""
    from gpubp.kernels import cpu_epoch

    calls = []

    def step_layer(buffers, layout, update, l, fused):
        calls.append(("layer", l))
        cpu_epoch_update._step_layer(buffers, layout, update, l, fused)

    def apply(*args):
        calls.append(("flat",))
        cpu_epoch_update._apply.py_func(*args)

    monkeypatch.setattr(cpu_epoch, "_step_layer", step_layer)
    monkeypatch.setattr(cpu_epoch, "_apply", apply)
    for helper in ("_batch", "_forward", "_output", "_backward"):  # inlined when compiled
        monkeypatch.setattr(cpu_epoch, helper, getattr(cpu_epoch, helper).py_func)
    monkeypatch.setattr(cpu_epoch, "_compiled_epoch", lambda *a: cpu_epoch._epoch.py_func(
        *(kind(*fields) for kind, fields in zip(
            (cpu_epoch.Batches, cpu_epoch.Buffers, cpu_epoch.Layout, cpu_epoch.Codes,
             cpu_epoch.Update), a))))
    net = gpubp.Network(SIZES, backend="cpu", dtype="float64", seed=0)
    opt = OPTIMIZERS[name]()
    if clip_norm:
        opt.set_clipping(clip_norm=clip_norm)
    X, Y = make_problem(SIZES, "cross_entropy", 16, seed=3)
    compiled.train_epoch(net, opt, X, Y, np.arange(16), 8)
    per_step = [("layer", 3), ("layer", 2), ("layer", 1)] if not clip_norm else [("flat",)]
    assert calls == per_step * 2
