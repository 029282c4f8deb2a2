"""DP-SGD's clipping kernels (gpubp.kernels.cuda_private) and private fits on the simulated
``cuda`` backend, against the NumPy twins and the reference backend.

Run in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` by ``tests/test_cuda_private.py`` (the
simulator must be on before Numba is first imported; see ``tests/cudasim_kernels.py``).
"""

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.kernels import cuda as K
from gpubp.kernels import cuda_private as KP
from gpubp.kernels import reference_private as RP
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_cuda_private.py runs this file that way)",
                allow_module_level=True)

prepare()  # a faster GIL switch; a lock the simulator's shared memory lacks

RTOL = {np.float32: 2e-6, np.float64: 1e-13}
SIZES = [37, 5, 1, 33]  # rows wider than the 32-thread block, a 1-wide layer


def _layers(dtype, P, rng, scale=1.0):
    inputs = [rng.normal(size=(P, n)).astype(dtype) for n in SIZES[:-1]]
    deltas = [(rng.normal(size=(P, n)) * scale).astype(dtype) for n in SIZES[1:]]
    return inputs, deltas


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("P", [1, 7, 70])
def test_norm_kernel_matches_the_twin(dtype, P, monkeypatch):
    monkeypatch.setattr(KP, "ROW_MAX_BLOCKS", 3)  # rows strided over fewer blocks
    rng = np.random.default_rng(P)
    inputs, deltas = _layers(dtype, P, rng)
    got, want = np.full(P, 2.0, dtype), np.full(P, 2.0, dtype)
    for l, (a, d) in enumerate(zip(inputs, deltas)):
        KP.example_norms_sq(a, d, got, accumulate=l > 0)
        RP.example_norms_sq(a, d, want, accumulate=l > 0)
        np.testing.assert_allclose(got, want, rtol=RTOL[dtype])
    exact = sum(((a.astype(np.float64) ** 2).sum(1) + 1) * (d.astype(np.float64) ** 2).sum(1)
                for a, d in zip(inputs, deltas))
    np.testing.assert_allclose(got, exact, rtol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [1e-3, 0.5, 1e3])  # every row clipped, some, none
def test_clipping_matches_the_twin_and_clips_to_C(dtype, C, monkeypatch):
    monkeypatch.setattr(K, "ELEMENTWISE_MAX_BLOCKS", 2)  # entries strided over the grid
    rng = np.random.default_rng(3)
    P = 23
    inputs, deltas = _layers(dtype, P, rng, scale=0.1 / P)  # δ carry 1/P
    got = [d.copy() for d in deltas]
    want = [d.copy() for d in deltas]
    total = KP.clip_example_rows(inputs, got, C)
    RP.clip_example_rows(inputs, want, C)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL[dtype], atol=0)
    # each example's clipped gradient (the δ now carry P f_p): its norm is
    # ‖g_p‖ min(1, C / (‖g_p‖ + 1e-6)), Opacus's clipping
    clipped = np.sqrt(sum(((a.astype(np.float64) ** 2).sum(1) + 1) *
                          (d.astype(np.float64) ** 2).sum(1) for a, d in zip(inputs, got)))
    original = P * np.sqrt(total.astype(np.float64))
    np.testing.assert_allclose(clipped, original * np.minimum(1, C / (original + 1e-6)),
                               rtol=10 * RTOL[dtype])
    assert (clipped <= C * (1 + 10 * RTOL[dtype])).all()


def test_a_nan_norm_stays_nan():
    inputs, deltas = _layers(np.float32, 4, np.random.default_rng(0))
    deltas[0][2, 1] = np.nan
    KP.clip_example_rows(inputs, deltas, 1.0)
    assert np.isnan(deltas[1][2]).all() and np.isfinite(deltas[1][[0, 1, 3]]).all()


def _pair(dtype, sizes=(5, 6, 4, 3)):
    kwargs = {"hidden": ["tanh", "relu"], "output": "softmax", "dtype": dtype, "seed": 0}
    return (gpubp.Network(list(sizes), device="cuda", fallback=False, **kwargs),
            gpubp.Network(list(sizes), device="cpu", backend="reference", **kwargs))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("poisson", [True, False])
def test_private_fit_matches_the_reference(dtype, poisson):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(29, 5)), rng.integers(0, 3, 29)
    cuda, ref = _pair(dtype)
    assert cuda.backend.name == "cuda"
    dp = gpubp.DPSGD(max_grad_norm=0.3, noise_multiplier=0.7, poisson=poisson)
    h = [net.fit(X, y, epochs=2, batch_size=6, lr=0.2, verbose=0, privacy=dp)
         for net in (cuda, ref)]
    rtol = 2e-5 if dtype == "float32" else 1e-12
    for got, want in zip(*(net.get_params() for net in (cuda, ref))):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert h[0]["epsilon"] == h[1]["epsilon"]
    np.testing.assert_allclose(h[0]["loss"], h[1]["loss"], rtol=rtol)
    # the kernels ran: their workspace of the squared norms exists
    assert any(key[0] == "example_norms" for key in cuda.backend._scratch)
