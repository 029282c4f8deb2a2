"""The fused optimizer loops of :mod:`gpubp.kernels.cpu_update` against their NumPy twins
and PyTorch's rounding: Adam/AdamW and RMSprop equal the reference bit for bit (float32
and float64: the same operations in the same order); the float32 Adam step, taken from
``torch.optim.Adam``'s own moments, rounds as torch's does for most entries (its order,
``θ + (−a m) / (√v / b + ε)``); and the Adam loop vectorises with two divisions per
square root, no float64 in the float32 loop."""

import re

import numpy as np
import pytest
import torch
from numba import njit

from gpubp.kernels import cpu_update
from gpubp.kernels import reference as R

DTYPES = [np.float32, np.float64]


def _gradient(rng, shape, dtype):
    # magnitudes over nine decades, so that ε and √v both matter in the denominator
    return (rng.standard_normal(shape) * 10.0 ** rng.uniform(-8, 1, shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hyper", [R.AdamStep(1e-2, 0.9, 0.999, 1e-8, 0, 0.0),
                                   R.AdamStep(1e-2, 0.9, 0.999, 1e-8, 0, 0.01),
                                   R.AdamStep(3e-3, 0.8, 0.99, 1e-6, 0, 0.0, 0.1)],
                         ids=["adam", "adam_l2", "adamw"])
@pytest.mark.parametrize("shape", [(7,), (65, 33)])
def test_adam_loop_equals_the_reference_bit_for_bit(dtype, hyper, shape):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(shape).astype(dtype)
    want = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    got = [x.copy() for x in want]
    for step in range(1, 7):
        g = _gradient(rng, shape, dtype)
        R.adam_update(want[0], g, want[1], want[2], hyper._replace(step=step))
        cpu_update.adam_update(got[0], g, got[1], got[2], hyper._replace(step=step))
    for name, x, y in zip("θmv", got, want):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert not np.array_equal(got[0], p)  # the loop ran


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, centered", [(0.0, False), (0.9, False), (0.0, True),
                                                (0.9, True)])
def test_rmsprop_loop_equals_the_reference_bit_for_bit(dtype, momentum, centered):
    rng = np.random.default_rng(1)
    p = rng.standard_normal(500).astype(dtype)
    want = [p.copy()] + [np.zeros_like(p) for _ in range(3)]
    got = [x.copy() for x in want]
    hyper = R.RMSpropStep(1e-2, 0.99, 1e-8, 0.01, momentum, centered)
    for _ in range(6):
        g = _gradient(rng, p.shape, dtype)
        R.rmsprop_update(want[0], g, want[1], want[2], want[3], hyper)
        cpu_update.rmsprop_update(got[0], g, got[1], got[2], got[3], hyper)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)


def test_the_float32_adam_step_rounds_as_torch_does():
    """Each step starts from θ = 0 and zero moments at torch's step count ``t − 1``, so
    torch's new θ is its update exactly and both sides' moments are equal (0.1 g and
    0.001 g², no rounding apart): only the step's formula is compared, over ten ``t``.
    torch's order agrees on 88% of the entries (on AVX2 torch's float32 √ is not always
    correctly rounded, so not on all), ``lr m̂ / (√v̂ + ε)`` on 42%, ``√v · (1/b)`` on 61%
    (docs/performance.md, "The Adam step")."""
    n, lr, beta1, beta2, eps = 20000, 1e-3, 0.9, 0.999, 1e-8
    rng = np.random.default_rng(2)
    theta = torch.zeros(n, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr, betas=(beta1, beta2), eps=eps, foreach=False)
    agree = []
    for step in (1, 2, 3, 5, 10, 30, 100, 300, 1000, 3000):
        g = _gradient(rng, n, np.float32)
        with torch.no_grad():
            theta.zero_()
            for state in opt.state.values():
                state["step"].fill_(step - 1)
                state["exp_avg"].zero_()
                state["exp_avg_sq"].zero_()
        theta.grad = torch.from_numpy(g)
        opt.step()
        p, m, v = (np.zeros(n, np.float32) for _ in range(3))
        cpu_update.adam_update(p, g, m, v, R.AdamStep(lr, beta1, beta2, eps, step, 0.0))
        np.testing.assert_array_equal(m, opt.state[theta]["exp_avg"].numpy())
        np.testing.assert_array_equal(v, opt.state[theta]["exp_avg_sq"].numpy())
        agree.append(np.mean(p == theta.detach().numpy()))
    assert min(agree) > 0.8, agree


def _ir(dispatcher, *args):
    """LLVM IR of an uncached copy (the cached one cannot be inspected), for ``args``."""
    options = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("cache", "nopython")}
    copy = njit(**options)(dispatcher.py_func)
    copy(*args)
    return "\n".join(copy.inspect_llvm().values())


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_adam_loop_vectorises_with_two_divisions_per_square_root(dtype):
    x = np.ones(64, dtype)
    kind, lanes = ("float", 8) if dtype == np.float32 else ("double", 4)
    ir = _ir(cpu_update._adam, x, x.copy(), x.copy(), x.copy(),
             (1e-3, 0.9, 0.1, 0.999, 0.001, 1e-8, 0.1, 0.001, 0.0, 1.0))
    vector = f"<{lanes} x {kind}>"
    assert vector in ir  # AVX2's lanes
    divisions = len(re.findall(rf"fdiv [^\n]*{re.escape(vector)}", ir))
    roots = len(re.findall(rf"call [^\n]*@llvm\.sqrt\.v{lanes}f{32 if kind == 'float' else 64}\(", ir))
    assert roots > 0 and divisions == 2 * roots, (divisions, roots)
    if dtype == np.float32:
        assert "x double>" not in ir  # no float64 vector in the float32 loop

