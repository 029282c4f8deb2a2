"""Huber, l1, label smoothing and weighted rows on the CUDA kernels and backend, simulated.

Run by ``tests/test_loss_options.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``
(see ``tests/cudasim_kernels.py``): the output kernels (narrow: a thread per row; wide:
a warp per row) against their reference twin in both dtypes, NaN kept, and a whole
weighted network trained on the simulated ``cuda`` backend against ``reference``.
"""

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.kernels import cuda as K
from gpubp.kernels import reference as R
from tests.cudasim_support import prepare
from tests.table_cases import targets

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_loss_options.py runs this file that way)", allow_module_level=True)

prepare()

CASES = [("identity", "huber", 0.7), ("tanh", "huber", 2.0), ("identity", "l1", 0.0),
         ("softmax", "cross_entropy", 0.1), ("sigmoid", "binary_cross_entropy", 0.2)]
TOL = {"float64": dict(rtol=1e-12, atol=1e-15), "float32": dict(rtol=2e-6, atol=1e-7)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [3, K.WIDE_OUTPUT + 3], ids=["narrow", "wide"])
@pytest.mark.parametrize("output, loss, param", CASES)
def test_output_delta(output, loss, param, n, dtype):
    rng = np.random.default_rng(2)
    P = 9
    a = R.activate(1.5 * rng.normal(size=(P, n)), output).astype(dtype)
    y = (1.5 * targets(rng, P, n, loss)).astype(dtype) if loss in ("huber", "l1") else \
        targets(rng, P, n, loss).astype(dtype)
    a[0, 0] = y[0, 0]  # l1's kink: slope 0
    want, got = np.empty_like(a), np.empty_like(a)
    cost_want = R.output_delta(a, y, output, loss, want, param)
    cost = K.output_delta(a, y, output, loss, got, param)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    np.testing.assert_allclose(cost, cost_want, rtol=TOL[dtype]["rtol"] * 10)
    if loss == "l1":
        assert got[0, 0] == 0


@pytest.mark.parametrize("loss", ["huber", "l1"])
def test_output_delta_keeps_nan(loss):
    a = np.array([[np.nan, 0.5, 3.0]])
    y = np.zeros_like(a)
    got = np.empty_like(a)
    cost = K.output_delta(a, y, "identity", loss, got, 1.0)
    assert np.isnan(got[0, 0]) and np.isfinite(got[0, 1:]).all() and np.isnan(cost)


@pytest.mark.parametrize("output, loss, param", CASES)
def test_weighted_network_matches_reference(output, loss, param):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(21, 6))
    Y = targets(rng, 21, 4, loss)
    s = rng.random(21) * 2
    key = "huber_delta" if loss == "huber" else "label_smoothing"
    kw = {} if loss == "l1" else {key: param}
    nets = [gpubp.Network([6, 5, 4], hidden="tanh", output=output, loss=loss, dtype="float64",
                          seed=1, **kw, **where) for where in
            ({"device": "cuda", "fallback": False}, {"backend": "reference"})]
    assert nets[0].backend.name == "cuda"
    histories = [net.fit(X, Y, epochs=2, batch_size=8, lr=0.1, verbose=0, sample_weight=s)
                 .history["loss"] for net in nets]
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-10)
    np.testing.assert_allclose(nets[0].backend.to_host(nets[0].theta), nets[1].theta,
                               rtol=1e-10, atol=1e-12)
    assert nets[0].evaluate(X, Y, sample_weight=s)["loss"] == pytest.approx(
        nets[1].evaluate(X, Y, sample_weight=s)["loss"], rel=1e-10)
