"""The pieces of the reductions that need no MPI launch: the names and the identity, the
shared-memory sum's slice bounds, its summing kernel against NumPy, the optimizers' update
of a span, and moving a network's flat buffers (the launched runs are in
test_distributed.py)."""

import numpy as np
import pytest

import gpubp
from gpubp.core import backprop
from gpubp.core.reduction import Identity
from gpubp.distributed.ranks import Group, Local
from gpubp.distributed.reductions import REDUCTIONS, create_reduction
from gpubp.distributed.shared_memory import ALIGN, _add_up, _bounds, move_flat
from gpubp.optim.optimizers import SGD, Adam


class FakeComm:
    """Enough of an mpi4py communicator for what is checked before any message."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2


def test_the_strategies_have_one_name_each():
    assert tuple(REDUCTIONS) == ("shared", "slice-sums", "iallreduce", "allreduce", "nccl")


@pytest.mark.parametrize("name", ["mpi", "Shared", "node_steps", None, 3])
def test_an_unknown_reduction_is_rejected_with_the_valid_names(name):
    net = gpubp.Network([3, 2], seed=0)
    message = (r"reduction must be one of \('shared', 'slice-sums', 'iallreduce', "
               r"'allreduce', 'nccl'\), got ")
    with pytest.raises(ValueError, match=message):
        create_reduction(name, net, FakeComm())
    if name is not None:  # None is the Group's default: picked by the network's arrays
        with pytest.raises(ValueError, match=message):
            Group(FakeComm(), reduction=name)


@pytest.mark.parametrize("keyword", ["overlap", "shared_memory", "node_steps", "strategy"])
def test_an_unknown_keyword_of_group_is_a_type_error_naming_it(keyword):
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{keyword}'"):
        Group(FakeComm(), **{keyword: False})


def test_nccl_needs_device_arrays():
    net = gpubp.Network([3, 2], seed=0)
    with pytest.raises(ValueError, match="reduction 'nccl' sums CuPy device arrays, got a "
                                         "network on the 'cpu' backend"):
        create_reduction("nccl", net, FakeComm())


@pytest.mark.parametrize("name", ["shared", "slice-sums"])
def test_shared_memory_needs_host_arrays(name):
    from types import SimpleNamespace

    on_gpu = SimpleNamespace(backend=SimpleNamespace(xp=SimpleNamespace(__name__="cupy"),
                                                     name="cuda"))
    with pytest.raises(ValueError, match=f"reduction '{name}' sums host arrays in shared "
                                         f"memory, got CuPy device arrays; use 'nccl'"):
        create_reduction(name, on_gpu, FakeComm())


def test_one_process_reduces_with_the_identity():
    net = gpubp.Network([4, 3, 2], dtype="float64", seed=0)
    alone = Local().reduction_for(net, SGD(lr=0.1))
    assert type(alone) is Identity and alone.name == "identity" and alone.net is net
    alone.begin(5, 5)
    assert alone.delta_scale == 1.0 and alone.seconds == 0.0
    # a step through the identity is the one-process step, bit for bit
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 4)), np.eye(2)[rng.integers(0, 2, 6)]
    twin = gpubp.Network([4, 3, 2], dtype="float64", seed=0)
    cost, P = backprop.train_step(net, SGD(lr=0.1), X, Y, np.arange(6), alone, 6)
    twin_cost, twin_P = twin._train_step(SGD(lr=0.1), X, Y, np.arange(6))
    assert (cost, P) == (twin_cost, twin_P) == (cost, 6)
    np.testing.assert_array_equal(net.theta, twin.theta)
    alone.close()


@pytest.mark.parametrize("n", [1, 15, 16, 17, 100, 1000, 4097])
@pytest.mark.parametrize("R", [1, 2, 3, 5, 8])
def test_slices_cover_the_vector_once_on_cache_line_boundaries(n, R):
    bounds = [_bounds(n, k, R) for k in range(R)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (lo, hi), (next_lo, _) in zip(bounds, bounds[1:]):
        assert lo <= hi == next_lo and hi % ALIGN == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("R", [2, 3, 4])
def test_add_up_equals_numpy(R, dtype):
    rng = np.random.default_rng(R)
    n = 20_000  # more than one BLOCK
    slots = tuple(rng.normal(size=n).astype(dtype) for _ in range(R))
    originals = [s.copy() for s in slots]
    expected = originals[0].copy()
    for other in originals[1:]:
        expected += other  # rank order, as the kernel adds
    lo, hi = 3, n - 5
    _add_up(slots, lo, hi, True, False)
    np.testing.assert_array_equal(slots[0][lo:hi], expected[lo:hi])
    np.testing.assert_array_equal(slots[0][:lo], originals[0][:lo])  # outside: untouched
    for other, original in zip(slots[1:], originals[1:]):
        np.testing.assert_array_equal(other, original)  # not spread yet
    _add_up(slots, lo, hi, False, True)
    for other, original in zip(slots[1:], originals[1:]):
        np.testing.assert_array_equal(other[lo:hi], expected[lo:hi])
        np.testing.assert_array_equal(other[hi:], original[hi:])


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda: Adam(lr=0.01, weight_decay=0.001)])
def test_an_elementwise_update_of_spans_equals_the_whole_update(make):
    net = gpubp.Network([5, 7, 3], dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    whole, pieces = make(), make()
    for opt in (whole, pieces):
        opt.initialize(net.backend, net.params)
    theta = [net.theta.copy(), net.theta.copy()]
    for _ in range(3):
        grad = rng.normal(size=net.theta.size)
        whole.step(net.backend, None, None, theta=theta[0], nabla_theta=grad)
        # rank 0 updates two spans in one step, rank 1 one span, with the same step count
        pieces.step(net.backend, None, None, theta=theta[1], nabla_theta=grad,
                    span=[slice(0, 16), slice(33, net.theta.size)])
        pieces.iterations -= 1
        pieces.step(net.backend, None, None, theta=theta[1], nabla_theta=grad,
                    span=slice(16, 33))
    assert pieces.iterations == whole.iterations == 3
    np.testing.assert_array_equal(theta[0], theta[1])
    for key in whole.state_names:
        np.testing.assert_array_equal(whole.flat_state[key], pieces.flat_state[key])


def test_a_span_needs_an_elementwise_optimizer():
    class Mine(SGD):
        elementwise = False

    net = gpubp.Network([3, 2], seed=0)
    opt = Mine(lr=0.1)
    opt.initialize(net.backend, net.params)
    with pytest.raises(ValueError, match="span: Mine does not update elementwise"):
        opt.step(net.backend, None, None, theta=net.theta, nabla_theta=net.nabla_theta,
                 span=slice(0, 2))


def test_moving_the_flat_buffers_keeps_values_and_views():
    net = gpubp.Network([4, 3, 2], dtype="float64", seed=0)
    W, b = net.get_params()
    theta = np.empty_like(net.theta)
    old = move_flat(net, "theta", theta)
    assert net.theta is theta and all(np.shares_memory(w, theta) for w in net.W + net.b)
    np.testing.assert_array_equal(theta, old)
    for w, w0 in zip(net.get_params()[0], W):
        np.testing.assert_array_equal(w, w0)
    grads = np.zeros_like(net.nabla_theta)
    move_flat(net, "nabla_theta", grads, copy=False)
    assert all(np.shares_memory(g, grads) for g in net.grads)
    with pytest.raises(ValueError, match=r"flat must have shape \(23,\) and dtype float64"):
        move_flat(net, "theta", np.empty(22))
    opt = SGD(lr=0.1, momentum=0.9)
    opt.initialize(net.backend, net.params)
    opt.flat_state["velocity"][:] = np.arange(23)
    moved = {"velocity": np.empty(23)}
    previous = opt._move_state(moved)
    np.testing.assert_array_equal(moved["velocity"], previous["velocity"])
    assert all(np.shares_memory(v, moved["velocity"]) for v in opt.state["velocity"])
