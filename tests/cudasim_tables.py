"""Every row of the activation and loss tables through the CUDA kernels, in the simulator.

Run by ``tests/test_tables.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (see
``tests/cudasim_kernels.py``, whose full kernel cases cover launch shapes and strides;
these are small and cheap: one block per launch, each kernel against its reference twin).
"""

import numpy as np
import pytest
from numba import config

from gpubp.kernels import cuda as K
from gpubp.kernels import reference as R
from tests.cudasim_support import prepare
from tests.table_cases import ACTIVATIONS, PAIRS, targets

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_tables.py runs this file that way)", allow_module_level=True)

prepare()

P, N = 7, 3


@pytest.mark.parametrize("name", [a.name for a in ACTIVATIONS])
def test_bias_activation(name):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(P, N))
    b = rng.normal(size=N)
    want = z.copy()
    R.bias_activation(want, b, name)
    K.bias_activation(z, b, name)
    np.testing.assert_allclose(z, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [a.name for a in ACTIVATIONS if a.derivative != "cancels"])
def test_hidden_delta(name):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(P, N))
    a = z if name in R.FROM_Z else R.activate(z.copy(), name)  # what g' is taken of
    delta = rng.normal(size=(P, N))
    want = delta.copy()
    R.hidden_delta(want, a, name)
    K.hidden_delta(delta, a, name)
    np.testing.assert_allclose(delta, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("output, loss", PAIRS)
def test_output_delta(output, loss):
    rng = np.random.default_rng(2)
    a = R.activate(rng.normal(size=(P, N)), output)
    y = targets(rng, P, N, loss)
    want, got = np.empty_like(a), np.empty_like(a)
    cost_want = R.output_delta(a, y, output, loss, want)
    cost = K.output_delta(a, y, output, loss, got)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cost, cost_want, rtol=1e-12)
