"""The kernels of a CUDA-graph step in Numba's CUDA simulator (run by tests/test_cuda_graph.py).

The simulator cannot capture graphs, so ``cuda_graph=True`` there runs each step eagerly
through the kernels a graph would hold: the batch gathered by ``gather_rows`` from the
order at a device-side offset, which ``advance`` moves on. Those kernels are checked
against their NumPy twins, and a fit through them against the ordinary one, bit for bit.
"""

import numpy as np
import pytest
from numba import config

import gpubp
from gpubp.kernels import cuda_gather
from gpubp.kernels import reference as R
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_cuda_graph.py runs this file that way)", allow_module_level=True)

prepare()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_and_advance_match_their_twins(dtype, monkeypatch):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(29, 7)).astype(dtype)
    order = rng.permutation(29).astype(np.int64)
    monkeypatch.setattr(cuda_gather, "MAX_BLOCKS", 2)  # 512 threads for 77 entries: stride
    for start, P in ((0, 11), (11, 11), (22, 7)):
        offset = np.array([start], np.int64)
        got, want = np.full((P, 7), np.nan, dtype), np.full((P, 7), np.nan, dtype)
        cuda_gather.gather_rows(src, order, offset, got)
        R.gather_rows(src, order, offset, want)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, src[order[start:start + P]])
        cuda_gather.advance(offset, P, dtype)
        assert offset[0] == start + P


@pytest.mark.parametrize("optimizer", ["momentum"])  # (plain SGD: the fake CuPy's tests)
def test_a_fit_through_the_graph_kernels_is_the_eager_fit(optimizer):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]
    nets = [gpubp.Network([6, 5, 3], hidden="tanh", output="softmax", loss="cross_entropy",
                          device="cuda", seed=0, fallback=False) for _ in range(2)]
    hist = [net.fit(X, Y, epochs=2, batch_size=16, verbose=0, lr=0.1, optimizer=optimizer,
                    cuda_graph=mode).history for net, mode in zip(nets, (False, True))]
    assert hist[0] == hist[1]  # 16, 16 and a last batch of 8
    for a, b in zip(*(net.get_params()[0] for net in nets)):
        np.testing.assert_array_equal(a, b)
    # and the accuracy counted by the output kernel is the reference's
    ref = gpubp.Network([6, 5, 3], hidden="tanh", output="softmax", loss="cross_entropy",
                        backend="reference", seed=0)
    want = ref.fit(X, Y, epochs=2, batch_size=16, verbose=0, lr=0.1, optimizer=optimizer,
                   shuffle=True).history
    np.testing.assert_allclose(hist[1]["accuracy"], want["accuracy"])
