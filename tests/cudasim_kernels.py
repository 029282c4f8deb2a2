"""Each CUDA kernel against its reference twin, in Numba's CUDA simulator.

Not collected by a plain ``pytest`` (the name does not start with ``test_``): the
simulator must be switched on before Numba is first imported, which a shared pytest
process cannot guarantee, so ``tests/test_cuda_kernels.py`` runs this file in a
subprocess with ``NUMBA_ENABLE_CUDASIM=1``. Run it by hand the same way::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim_kernels.py

Shapes are small and odd (P=37 rows, 13 inputs, 5 outputs) so that every launch has a
partial block and the tiled kernel has remainders in each of its three dimensions.

The kernel cases run twice: with the module's launch constants, and with the grid caps
patched so low that each kernel's grid-stride loop takes several trips (``caps="low"``);
each such test checks that its launch does cross them, so a kernel that handled one
element, row or tile per thread would fail.
"""


import numpy as np
import pytest
from numba import config

from gpubp.kernels import cuda as K
from gpubp.kernels import reference as R
from tests.cudasim_support import prepare

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                "(tests/test_cuda_kernels.py runs this file that way)", allow_module_level=True)

prepare()  # a faster GIL switch; a lock the simulator's shared memory lacks

RTOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]
P, N_IN, N_OUT = 37, 13, 5


def assert_close(actual, desired, dtype):
    """Relative agreement, with an absolute floor scaled to the data for entries near 0."""
    desired = np.asarray(desired)
    scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(37)


@pytest.fixture
def caps(request, monkeypatch):
    """The launch constants as shipped, or grid caps low enough to stride."""
    if request.param == "low":
        for name, value in LOW_CAPS.items():
            monkeypatch.setattr(K, name, value)
    return request.param


# Grids of a few blocks: 64 threads for the elementwise kernels, 3 softmax rows at a
# time, 1 or 2 output-delta blocks, the weight gradient split every GRAD_TILE_P rows.
LOW_CAPS = {"ELEMENTWISE_THREADS": 32, "ELEMENTWISE_MAX_BLOCKS": 2, "ROW_MAX_BLOCKS": 3,
            "DELTA_MAX_BLOCKS": 2, "GRAD_SPLIT_ROWS": K.GRAD_TILE_P}


def strides(caps, work, threads):
    """Assert that the patched launch has fewer threads than work items (it must stride)."""
    if caps == "low":
        assert threads < work, (threads, work)


# (dtype, caps): the strides are dtype-blind, so the low caps run in one dtype only.
DTYPE_CAPS = pytest.mark.parametrize("dtype, caps", [
    (np.float32, "default"), (np.float64, "default"), (np.float64, "low")],
    indirect=["caps"], ids=["float32", "float64", "float64-low-caps"])


def elementwise_threads(size):
    return K._blocks(size, K.ELEMENTWISE_THREADS, K.ELEMENTWISE_MAX_BLOCKS) * K.ELEMENTWISE_THREADS


@DTYPE_CAPS
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity", "softmax"])
@pytest.mark.parametrize("n", [N_OUT, 70])  # 70 > 2 * ROW_THREADS: rows span 3 strides
def test_bias_activation(rng, caps, dtype, activation, n):
    # Large |z| too: the sigmoid and softmax must neither overflow nor warn.
    z = (rng.normal(size=(P, n)) * 20).astype(dtype)
    z[0, :3] = [800, -800, 0]
    b = rng.normal(size=n).astype(dtype)
    got, want = z.copy(), z.copy()
    K.bias_activation(got, b, activation)
    R.bias_activation(want, b, activation)
    if activation == "softmax":
        strides(caps, P, K._blocks(P, 1, K.ROW_MAX_BLOCKS))
    else:
        strides(caps, z.size, elementwise_threads(z.size))
    assert got.dtype == dtype
    assert np.isfinite(got).all()
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity", "softmax"])
def test_bias_activation_keeps_nan(dtype, activation):
    """A NaN pre-activation gives NaN, as in the reference (relu is not max(0, z))."""
    z = np.zeros((3, 4), dtype)
    z[1, 2] = np.nan
    got, want = z.copy(), z.copy()
    K.bias_activation(got, np.zeros(4, dtype), activation)
    R.bias_activation(want, np.zeros(4, dtype), activation)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1, 2])


PAIRINGS = [
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
    ("sigmoid", "mse"),
    ("tanh", "mse"),
    ("relu", "mse"),
    ("identity", "mse"),
]


def _outputs(rng, activation, loss, dtype, shape=(P, N_OUT)):
    z = rng.normal(size=shape) * 3
    if activation != "identity":
        R.activate(z, activation)
    if loss == "cross_entropy":
        y = np.eye(shape[1])[rng.integers(0, shape[1], shape[0])]
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, shape).astype(float)
        z[:2, :2] = [[0.0, 1.0], [1.0, 0.0]]  # saturated outputs: the clipped costs
    else:
        y = rng.normal(size=shape)
    return z.astype(dtype), y.astype(dtype)


def _delta_threads(P, n):
    blocks = K.delta_blocks(P, n)
    return blocks * (K.ROW_THREADS if n > K.WIDE_OUTPUT else K.REDUCE_THREADS), blocks


DELTA_CASES = [(act, loss, P, N_OUT) for act, loss in PAIRINGS] + [
    # several blocks of partial costs, the last one partial
    ("softmax", "cross_entropy", 300, 3), ("identity", "mse", 300, 3),
    # wide: a warp per row, 3 column strides
    ("softmax", "cross_entropy", P, 70), ("sigmoid", "binary_cross_entropy", P, 70),
    ("tanh", "mse", P, 70),
]


@DTYPE_CAPS
@pytest.mark.parametrize("activation, loss, rows, n", DELTA_CASES)
def test_output_delta(rng, caps, dtype, activation, loss, rows, n):
    a, y = _outputs(rng, activation, loss, dtype, shape=(rows, n))
    got, want = np.full_like(a, np.nan), np.full_like(a, np.nan)
    threads, blocks = _delta_threads(rows, n)
    if rows == 300 and n <= K.WIDE_OUTPUT:
        strides(caps, rows, threads)
    if n > K.WIDE_OUTPUT:
        strides(caps, rows, blocks)
    partials = np.full(blocks, np.nan, dtype)
    cost, total = np.full(1, np.nan, dtype), np.array([0.25])
    correct = np.array([5], np.int64)  # added to: the epoch's count so far
    out = K.output_delta(a, y, activation, loss, got,
                         sums=K.CostSums(partials, cost, total, correct=correct))
    want_cost = R.output_delta(a, y, activation, loss, want)
    assert out is cost and np.isfinite(cost[0])
    assert correct[0] - 5 == R.count_correct(a, y, loss)
    if K.count_code(loss) and n == N_OUT:  # not trivially 0 or P (70 classes: 0)
        assert 0 < correct[0] - 5 < rows
    assert_close(got, want, dtype)
    assert_close(cost[0], want_cost, dtype)
    # the epoch sum: float64, added to what it held
    assert total.dtype == np.float64
    assert total[0] - 0.25 == pytest.approx(want_cost * rows, rel=RTOL[dtype])
    assert K.output_delta(a, y, activation, loss, got) == pytest.approx(float(cost[0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [N_OUT, 70])
def test_output_delta_counts_like_argmax(dtype, n):
    """Ties (the first maximum wins), NaN (the largest, first NaN wins) in outputs and in
    targets, as np.argmax: the count equals the reference's row for row."""
    rng = np.random.default_rng(3)
    a = rng.random((P, n)).astype(dtype)
    y = np.zeros((P, n), dtype)
    y[np.arange(P), rng.integers(0, n, P)] = 1
    a[0, :3] = 2.0  # a tie: arg-max 0
    y[0] = 0
    y[0, 1] = 1  # wrong: the target's class is 1
    a[1, :] = 0.5
    a[1, 2] = np.nan  # NaN wins over larger values
    y[1] = 0
    y[1, 2] = 1
    a[2, 4], a[2, 1] = np.nan, np.nan  # the first NaN
    y[2] = 0
    y[2, 1] = 1
    y[3, :] = 0  # no class: arg-max 0
    a[3, 0] = 2.0
    for rows in ([0], [1], [2], [3], slice(None)):
        sub_a, sub_y = np.ascontiguousarray(a[rows]), np.ascontiguousarray(y[rows])
        correct = np.zeros(1, np.int64)
        partials = np.empty(K.delta_blocks(len(sub_a), n), dtype)
        with np.errstate(invalid="ignore"):
            K.output_delta(sub_a, sub_y, "softmax", "cross_entropy", np.empty_like(sub_a),
                           sums=K.CostSums(partials, np.empty(1, dtype), np.zeros(1),
                                           correct=correct))
        assert correct[0] == R.count_correct(sub_a, sub_y, "cross_entropy"), rows
    assert [R.count_correct(a[[i]], y[[i]], "cross_entropy") for i in range(4)] == [0, 1, 1, 1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_delta_counts_binary_rows(dtype):
    """Several sigmoid outputs: a row is right when every output is on its target's side
    of 0.5 (0.5 itself is the negative side)."""
    a = np.array([[0.9, 0.2], [0.9, 0.7], [0.5, 0.1], [0.5, 0.6]], dtype)
    y = np.array([[1, 0], [1, 0], [0, 0], [1, 1]], dtype)
    correct = np.zeros(1, np.int64)
    K.output_delta(a, y, "sigmoid", "binary_cross_entropy", np.empty_like(a),
                   sums=K.CostSums(np.empty(1, dtype), np.empty(1, dtype), np.zeros(1),
                                   correct=correct))
    assert correct[0] == 2 == R.count_correct(a, y, "binary_cross_entropy")


def test_epoch_total_is_float64():
    """The batch's cost sum is added to the epoch total in float64: on top of 1e8 (where
    a float32 step is 8) it lands exactly where float64 arithmetic puts it."""
    a, y = _outputs(np.random.default_rng(0), "softmax", "cross_entropy", np.float32)
    delta, partials = np.empty_like(a), np.empty(K.delta_blocks(P, N_OUT), np.float32)
    cost, total = np.empty(1, np.float32), np.zeros(1)
    K.output_delta(a, y, "softmax", "cross_entropy", delta,
                   sums=K.CostSums(partials, cost, total))
    batch_sum = float(total[0])  # a float32 sum, exactly representable
    total[0] = 1e8
    K.output_delta(a, y, "softmax", "cross_entropy", delta,
                   sums=K.CostSums(partials, cost, total))
    assert total[0] == 1e8 + batch_sum
    assert float(np.float32(1e8) + np.float32(batch_sum)) != total[0]  # float32 drifts


@pytest.mark.parametrize("dtype", DTYPES)
def test_finish_cost_strides_over_many_partials(dtype):
    """More partial sums than the reduction block's threads: each thread adds several."""
    partials = np.random.default_rng(2).normal(size=3 * K.REDUCE_THREADS + 5).astype(dtype)
    cost, total = np.full(1, np.nan, dtype), np.array([1.5])
    K.kernels_for(dtype)["finish_cost"](1, K.REDUCE_THREADS, 0, partials, cost, total, 7)
    want = partials.astype(np.float64).sum()
    assert_close(cost[0], want / 7, dtype)
    assert total[0] - 1.5 == pytest.approx(want, rel=RTOL[dtype], abs=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float32])
@pytest.mark.parametrize("activation, loss", PAIRINGS)
@pytest.mark.parametrize("n", [N_OUT, 70])
def test_output_delta_keeps_nan(dtype, activation, loss, n):
    """A NaN output gives a NaN cost (the reference's); clipping must not hide it."""
    a, y = _outputs(np.random.default_rng(1), activation, loss, dtype, shape=(P, n))
    a[3, 1] = np.nan
    got, want = np.empty_like(a), np.empty_like(a)
    cost = K.output_delta(a, y, activation, loss, got)
    with np.errstate(invalid="ignore"):
        want_cost = R.output_delta(a, y, activation, loss, want)
    assert np.isnan(want_cost) and np.isnan(cost)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_device_workspaces_are_required():
    class DeviceLike:  # anything but a NumPy array
        dtype, shape, ndim, size = np.dtype(np.float32), (4, 3), 2, 12

    with pytest.raises(TypeError, match="partials must be given for device arrays"):
        K.output_delta(DeviceLike(), None, "softmax", "cross_entropy", None)
    with pytest.raises(TypeError, match="split must be given for device arrays"):
        K.weight_bias_gradients(DeviceLike(), DeviceLike(), None, None)


@DTYPE_CAPS
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
@pytest.mark.parametrize("flat", [False, True])
def test_hidden_delta(rng, caps, dtype, activation, flat):
    a = rng.normal(size=(P, N_IN))
    if activation != "identity":
        R.activate(a, activation)
    a = a.astype(dtype)
    delta = rng.normal(size=(P, N_IN)).astype(dtype)
    got, want = delta.copy(), delta.copy()
    strides(caps, delta.size, elementwise_threads(delta.size))
    if flat:  # as the backend passes them: cached flat views
        K.hidden_delta(got.reshape(-1), a.reshape(-1), activation)
    else:
        K.hidden_delta(got, a, activation)
    R.hidden_delta(want, a, activation)
    assert_close(got, want, dtype)


@DTYPE_CAPS
@pytest.mark.parametrize("rows, n_in, n_out", [
    (P, N_IN, N_OUT),  # one output tile; P = 2 staging steps + 5
    (P, 70, 40),       # 2 x 2 output tiles, remainders in i, j and p
    (16, 63, 32),      # exact tiles: the bias row is the last row of the only tile
    (5, 64, 1),        # the bias row alone in a second tile; one column; P < GRAD_TILE_P
])
def test_weight_bias_gradients(rng, caps, dtype, rows, n_in, n_out):
    a_prev = rng.normal(size=(rows, n_in)).astype(dtype)
    delta = rng.normal(size=(rows, n_out)).astype(dtype)
    dW, db = np.full((n_in, n_out), np.nan, dtype), np.full(n_out, np.nan, dtype)
    want_dW, want_db = np.empty_like(dW), np.empty_like(db)
    splits, per_split = K.grad_splits(rows, n_in, n_out)
    if caps == "low" and rows > K.GRAD_TILE_P:
        assert splits > 1 and per_split == K.GRAD_TILE_P
        strides(caps, (n_in + 1) * n_out, elementwise_threads((n_in + 1) * n_out))
    split = np.full((splits, n_in + 1, n_out), np.nan, dtype)
    K.weight_bias_gradients(a_prev, delta, dW, db, split=split)
    R.weight_bias_gradients(a_prev, delta, want_dW, want_db)
    assert_close(dW, want_dW, dtype)
    assert_close(db, want_db, dtype)
    if splits > 1:  # the partial products add up to the gradient
        assert_close(split.sum(0), np.vstack([want_dW, want_db]), dtype)


def test_grad_splits():
    # the output tiles alone fill the GPU: no split, whatever P
    assert K.grad_splits(10**6, 1024, 1024) == (1, 10**6 + (-10**6) % K.GRAD_TILE_P)
    # 784 -> 10 is 13 tiles: split long batches, each split a multiple of GRAD_TILE_P
    splits, rows = K.grad_splits(8192, 784, 10)
    assert splits == K.GRAD_TARGET_BLOCKS // 13 and rows % K.GRAD_TILE_P == 0
    assert (splits - 1) * rows < 8192 <= splits * rows
    assert K.grad_splits(64, 784, 10) == (1, 64)  # short batches: never
    assert K.grad_splits(10**7, 8, 8)[0] == K.GRAD_MAX_SPLITS


@DTYPE_CAPS
@pytest.mark.parametrize("momentum, nesterov, weight_decay", [
    (0.0, False, 0.0), (0.0, False, 1e-2), (0.9, False, 0.0), (0.9, True, 1e-3),
])
def test_sgd_update(rng, caps, dtype, momentum, nesterov, weight_decay):
    param = rng.normal(size=(N_IN, N_OUT + 2)).astype(dtype)
    strides(caps, param.size, elementwise_threads(param.size))
    velocity = rng.normal(size=param.shape).astype(dtype) if momentum else None
    got = [param.copy(), None if velocity is None else velocity.copy()]
    want = [param.copy(), None if velocity is None else velocity.copy()]
    for _ in range(3):
        grad = rng.normal(size=param.shape).astype(dtype)
        K.sgd_update(got[0], grad, got[1], 0.1, momentum, nesterov, weight_decay)
        R.sgd_update(want[0], grad, want[1], 0.1, momentum, nesterov, weight_decay)
    assert_close(got[0], want[0], dtype)
    if momentum:
        assert_close(got[1], want[1], dtype)


@DTYPE_CAPS
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_update(rng, caps, dtype, weight_decay):
    param = rng.normal(size=(N_IN * N_OUT + 7,)).astype(dtype)
    strides(caps, param.size, elementwise_threads(param.size))
    got = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    want = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    for step in (1, 2, 3):
        grad = rng.normal(size=param.shape).astype(dtype)
        K.adam_update(*got[:1], grad, *got[1:], R.AdamStep(1e-2, 0.9, 0.999, 1e-8, step, weight_decay))
        R.adam_update(*want[:1], grad, *want[1:], R.AdamStep(1e-2, 0.9, 0.999, 1e-8, step, weight_decay))
    for g, w in zip(got, want):
        assert_close(g, w, dtype)
