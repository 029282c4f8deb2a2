"""Per-batch callbacks on the simulated ``cuda`` backend, against ``reference``: the same
calls, the same batch figures, the same stop inside an epoch.

Run in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` by ``tests/test_batch_callbacks.py``
(the simulator must be on before Numba is first imported; see ``tests/cudasim_kernels.py``).
"""

import numpy as np
import pytest
from numba import config

import gpubp
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_batch_callbacks.py runs this file that way)",
                allow_module_level=True)

prepare()  # a faster GIL switch, and the simulator's shared arrays under a lock


def test_batch_calls_and_stop_match_reference():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 3))
    Y = np.eye(2)[(X[:, 0] > 0).astype(int)]
    seen = {}
    for device, backend in (("cuda", None), ("cpu", "reference")):
        net = gpubp.Network([3, 4, 2], hidden="tanh", output="softmax", dtype="float64",
                            seed=0, device=device, backend=backend, fallback=False)
        calls = []

        def on_batch_end(run, batch, logs, calls=calls):
            calls.append((batch, logs["loss"], logs["accuracy"], logs["size"]))
            if batch == 3:
                run.stop("enough")

        history = net.fit(X, Y, epochs=3, batch_size=4, lr=0.5, verbose=0, callbacks=[
            gpubp.LambdaCallback(on_batch_end=on_batch_end, batch_every=2)])
        assert net.backend.name == (backend or "cuda")
        seen[device] = (calls, history["loss"], net.get_params()[0][0])
    (c_calls, c_loss, c_W), (r_calls, r_loss, r_W) = seen["cuda"], seen["cpu"]
    assert [c[0] for c in c_calls] == [c[0] for c in r_calls] == [1, 3]
    np.testing.assert_allclose([c[1:] for c in c_calls], [c[1:] for c in r_calls], rtol=1e-10)
    np.testing.assert_allclose(c_loss, r_loss, rtol=1e-10)
    assert len(c_loss) == 1
    np.testing.assert_allclose(c_W, r_W, rtol=1e-10)
