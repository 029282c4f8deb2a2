"""The compiled CPU epoch (gpubp.core.compiled, gpubp.kernels.cpu_epoch) against the per-kernel
step it replaces in ``fit``: the same parameters, costs, accuracy counts and optimizer state
for every activation/loss pairing, depth 1..3, each optimizer, shuffled rows and an uneven
last batch; and it allocates nothing per step."""

import tracemalloc

import numpy as np
import pytest
from tests.conftest import PAIRINGS, make_problem, randomize_biases

import gpubp
from gpubp.core import compiled
from gpubp.optim.optimizers import SGD, Adam

OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1),  # its step is fused into the weight-gradient GEMM
    "sgd-decay": lambda: SGD(lr=0.1, weight_decay=0.05),  # fused too: beta = 1 - lr λ
    "momentum": lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda: SGD(lr=0.1, momentum=0.8, nesterov=True),
    "adam": lambda: Adam(lr=0.01, weight_decay=1e-3),
    # scikit-learn's: alpha W / P on the weights only, Adam's eps on the uncorrected sqrt(v)
    "sgd-penalty": lambda: SGD(lr=0.1, penalty=0.3),  # fused: beta = 1 - lr alpha / P
    "nesterov-penalty": lambda: SGD(lr=0.1, momentum=0.8, nesterov=True, penalty=0.3),
    "adam-sklearn": lambda: Adam(lr=0.01, weight_decay=1e-3, penalty=0.2, eps_hat=True),
}
DEPTHS = {1: [6, 3], 2: [6, 5, 3], 3: [6, 5, 4, 3]}
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}


def _per_kernel_epoch(net, opt, X, Y, order, B):
    """The loop ``fit`` runs on backends without a compiled epoch."""
    total, correct, penalty = 0.0, 0, 0.0
    for start in range(0, len(order), B):
        batch = order[start:start + B]
        penalty += opt.begin_batch(net.backend, net.params, len(batch)) * len(batch)
        cost, P = net._train_step(opt, X, Y, batch)
        total += cost * P
        if net.is_classifier:
            correct += int(net._count_correct(P))
    return total, correct, penalty


def _pair(sizes, hidden, output, loss, dtype, name):
    nets = [randomize_biases(gpubp.Network(sizes, hidden=hidden, output=output, loss=loss,
                                           backend="cpu", dtype=dtype, seed=2))
            for _ in range(2)]
    return nets, [OPTIMIZERS[name]() for _ in range(2)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("depth", list(DEPTHS))
@pytest.mark.parametrize("hidden,output,loss", PAIRINGS)
def test_compiled_epoch_equals_the_per_kernel_steps(hidden, output, loss, depth, name, dtype):
    sizes = DEPTHS[depth]
    X, Y = make_problem(sizes, loss, 23, seed=depth)
    X, Y = X.astype(dtype), Y.astype(dtype)
    (ref, fast), (opt_ref, opt_fast) = _pair(sizes, hidden, output, loss, dtype, name)
    order = np.random.default_rng(4).permutation(23)  # shuffled; batches of 8, 8 and 7
    for epoch in range(2):
        for opt in (opt_ref, opt_fast):
            opt.start_epoch(epoch, 2)
        expected = _per_kernel_epoch(ref, opt_ref, X, Y, order, 8)
        got = compiled.train_epoch(fast, opt_fast, X, Y, order, 8)
        np.testing.assert_allclose(got[0], expected[0], **TOL[dtype])
        assert got[1] == expected[1]
        np.testing.assert_allclose(got[2], expected[2], **TOL[dtype])
        assert (got[2] > 0) == bool(opt_fast.penalty)
    assert opt_fast.iterations == opt_ref.iterations == 6
    np.testing.assert_allclose(fast.theta, ref.theta, **TOL[dtype])
    np.testing.assert_allclose(fast.nabla_theta, ref.nabla_theta, **TOL[dtype])
    for key in opt_ref.state_names:
        np.testing.assert_allclose(opt_fast.flat_state[key], opt_ref.flat_state[key],
                                   **TOL[dtype])


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fit_takes_the_compiled_epoch_only_on_the_cpu_backend(backend, monkeypatch):
    calls = []
    original = compiled.train_epoch
    monkeypatch.setattr(compiled, "train_epoch",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    X, Y = make_problem([4, 5, 3], "cross_entropy", 30)
    net = gpubp.Network([4, 5, 3], backend=backend, seed=0)
    net.fit(X, Y, epochs=2, batch_size=7, verbose=0)
    assert len(calls) == (2 if backend == "cpu" else 0)
    calls.clear()

    class MySGD(SGD):  # a custom optimizer's own update must run: the per-kernel path
        pass

    net.fit(X, Y, epochs=1, batch_size=7, verbose=0, optimizer=MySGD(lr=0.1))
    assert calls == []


def test_fit_on_cpu_and_reference_record_the_same_history():
    X, Y = make_problem([5, 7, 3], "cross_entropy", 50, seed=3)
    hist = []
    for backend in ("reference", "cpu"):
        net = gpubp.Network([5, 7, 3], hidden="relu", backend=backend, dtype="float64", seed=1)
        hist.append(net.fit(X, Y, epochs=3, batch_size=16, verbose=0, optimizer="nesterov",
                            lr=0.05))
    np.testing.assert_allclose(hist[0]["loss"], hist[1]["loss"], rtol=1e-12)
    assert hist[0]["accuracy"] == hist[1]["accuracy"]


def test_nothing_is_allocated_per_step():
    from numba.core.runtime import _nrt_python, rtsys

    sizes = [30, 20, 4]
    net = gpubp.Network(sizes, dtype="float64", seed=0)
    opt = Adam(lr=1e-3)
    X, Y = make_problem(sizes, "cross_entropy", 2000)
    order = np.arange(2000)
    compiled.train_epoch(net, opt, X, Y, order[:64], 32)  # compile, allocate the state

    def allocations(rows):
        start = rtsys.get_allocation_stats().alloc
        compiled.train_epoch(net, opt, X, Y, order[:rows], 32)
        return rtsys.get_allocation_stats().alloc - start

    _nrt_python.memsys_enable_stats()
    try:
        few, many = allocations(64), allocations(2000)  # 2 steps and 63 steps
    finally:
        _nrt_python.memsys_disable_stats()
    assert few == many, f"{many - few} more NRT allocations in 61 more steps"
    # and on the Python heap: the epoch's constant overhead only (small objects, no arrays)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        compiled.train_epoch(net, opt, X, Y, order, 32)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 4096 and current - before < 1024, (peak - before, current - before)


def test_blas_threads_are_limited_and_restored():
    from threadpoolctl import threadpool_info

    assert compiled.blas_threads([64, 64, 10], 32) == 1
    assert compiled.blas_threads([784, 1024, 1024, 10], 256) is None

    def counts():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = counts()
    with compiled.BlasThreads(1):
        assert all(n == 1 for n in counts())
    assert counts() == before
    with compiled.BlasThreads(None):
        assert counts() == before


def test_probing_blas_threads_splits_the_epoch_without_changing_it(monkeypatch):
    """Large steps time single steps on one and on all BLAS threads, alternating, each
    after an untimed one, then use the count with the fastest step; the epoch split into
    thirteen calls takes the same steps as one call."""
    X, Y = make_problem([6, 5, 3], "cross_entropy", 100, seed=5)
    order = np.random.default_rng(1).permutation(100)  # 13 steps: 4 x 3 rounds to probe
    nets = [gpubp.Network([6, 5, 3], dtype="float64", seed=0) for _ in range(2)]
    opts = [SGD(lr=0.1, momentum=0.9) for _ in range(2)]
    monkeypatch.setattr(compiled, "_probes", {})
    monkeypatch.setattr(compiled, "blas_threads", lambda sizes, batch_size: 1)
    expected = compiled.train_epoch(nets[0], opts[0], X, Y, order, 8)  # 13 steps, one call
    monkeypatch.setattr(compiled, "blas_threads", lambda sizes, batch_size: None)
    monkeypatch.setattr(compiled, "REPROBE_EVERY", 2)
    calls = []
    limiter = compiled.BlasThreads
    monkeypatch.setattr(compiled, "BlasThreads", lambda n: calls.append(n) or limiter(n))
    got = compiled.train_epoch(nets[1], opts[1], X, Y, order, 8)
    # each trial an untimed step then a timed one, the order alternating by round
    assert calls == [1, 1, None, None, None, None, 1, 1, 1, 1, None, None,
                     compiled._probes[((6, 5, 3), 8, "float64")][0]]
    assert got[1] == expected[1] and got[0] == pytest.approx(expected[0], rel=1e-12)
    assert opts[1].iterations == opts[0].iterations == 13
    np.testing.assert_allclose(nets[1].theta, nets[0].theta, rtol=1e-12, atol=1e-15)
    calls.clear()
    compiled.train_epoch(nets[1], opts[1], X, Y, order, 8)  # the choice is reused...
    assert len(calls) == 1
    calls.clear()
    compiled.train_epoch(nets[1], opts[1], X, Y, order, 8)  # ...until it is due again
    assert len(calls) == 13
    small = X[:80], Y[:80], order[order < 80]  # 10 steps, too few to probe: one call
    calls.clear()
    compiled.train_epoch(nets[1], opts[1], *small, 8)
    assert calls == [None]


def test_one_slow_trial_does_not_decide_the_thread_count(monkeypatch):
    """The probe keeps each count's fastest step: a burst of load on one trial of the
    faster count (50 time units against 5) does not make it pick the slower one."""
    X, Y = make_problem([6, 5, 3], "cross_entropy", 100, seed=5)
    net = gpubp.Network([6, 5, 3], dtype="float64", seed=0)
    monkeypatch.setattr(compiled, "_probes", {})
    monkeypatch.setattr(compiled, "blas_threads", lambda sizes, batch_size: None)
    # per trial an untimed step (0) then the timed one; the last None: the epoch's rest
    durations = {1: [0, 5, 0, 5, 0, 5], None: [0, 50, 0, 3, 0, 3, 0]}
    clock = [0.0]
    monkeypatch.setattr(compiled.time, "perf_counter", lambda: clock[0])
    limiter = compiled.BlasThreads

    def timed(n):
        clock[0] += durations[n].pop(0) if durations[n] else 0
        return limiter(n)

    monkeypatch.setattr(compiled, "BlasThreads", timed)
    compiled.train_epoch(net, SGD(lr=0.1), X, Y, np.arange(100), 8)
    assert compiled._probes[((6, 5, 3), 8, "float64")][0] is None  # all threads
    durations.update({1: [0, 5, 0, 4, 0, 5, 0], None: [0, 6, 0, 6, 0, 6]})  # one is faster
    monkeypatch.setattr(compiled, "_probes", {})
    compiled.train_epoch(net, SGD(lr=0.1), X, Y, np.arange(100), 8)
    assert compiled._probes[((6, 5, 3), 8, "float64")][0] == 1


def test_the_jit_cache_is_keyed_by_the_kernels_it_compiles_in():
    """The compiled epoch is a closure over a hash of the gpubp modules cpu_epoch imports (the
    loops and codes of kernels/cpu.py among them), which Numba's cache key includes."""
    import hashlib

    from gpubp.kernels import cpu, cpu_epoch

    from gpubp.kernels import jit_cache

    sources = jit_cache.kernel_sources("gpubp.kernels.cpu_epoch")
    assert sources["gpubp.kernels.cpu"] == cpu.__file__
    assert "gpubp.kernels.cpu_epoch_update" in sources  # the optimizer's step, inlined
    assert "gpubp.kernels.cpu_epoch" not in sources  # Numba's own stamp covers it
    h = hashlib.sha256()
    for name, path in sources.items():
        with open(path, "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    assert cpu_epoch.KERNELS_DIGEST == h.hexdigest()
    cells = [c.cell_contents for c in cpu_epoch._compiled_epoch.py_func.__closure__]
    assert cells == [cpu_epoch.KERNELS_DIGEST]


def test_numba_keys_a_cached_closure_by_its_captured_value(tmp_path, monkeypatch):
    """What the cache of train_epoch relies on, on a small closure of the same shape: a
    captured value the code never reads still selects its own cache entry."""
    import numba
    from numba import njit

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))

    def make(key):
        @njit(cache=True)
        def f(x):
            if False:
                key
            return x + 1
        return f

    def compile_(key):
        f = make(key)
        assert f(1) == 2
        return sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())

    assert compile_("a") == (0, 1)
    assert compile_("b") == (0, 1)  # not a's entry
    assert compile_("a") == (1, 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("first,m", [(0, 7), (2, 3), (6, 1), (4, 0)])
def test_descend_is_beta_w_plus_alpha_a_columns_t_delta(dtype, first, m):
    """The BLAS call behind the fused SGD step and the node step (gpubp.distributed.split_step),
    against its NumPy twin, on the rows first..first+m of a 7 x 5 weight matrix."""
    from gpubp.kernels.cpu_epoch import descend

    rng = np.random.default_rng(first + m)
    a_prev = rng.normal(size=(9, 7)).astype(dtype)
    delta = rng.normal(size=(9, 5)).astype(dtype)
    W = rng.normal(size=(7, 5)).astype(dtype)
    rows = W[first:first + m]  # a contiguous block of whole rows, as the callers pass
    expected = 0.75 * rows - 0.1 * a_prev[:, first:first + m].T @ delta
    descend(rows, a_prev, delta, np.array([-0.1, 0.75], dtype), first)
    np.testing.assert_allclose(rows, expected, **TOL[dtype])
    before = W.copy()
    descend(W[:3], a_prev[:0], delta[:0], np.array([-0.1, 0.5], dtype))  # no rows: beta W
    np.testing.assert_array_equal(W[:3], before[:3] * np.asarray(0.5, dtype))
    np.testing.assert_array_equal(W[3:], before[3:])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_rows_in_order_are_read_in_place_with_the_same_result(name, dtype):
    """Batches of consecutive rows (shuffle=False) are read from X where they are, never
    copied into a^0, and train exactly as the per-kernel steps do; a shuffled tail in the
    same epoch is gathered."""
    sizes = DEPTHS[2]
    X, Y = make_problem(sizes, "cross_entropy", 29, seed=7)
    X, Y = X.astype(dtype), Y.astype(dtype)
    (ref, fast), (opt_ref, opt_fast) = _pair(sizes, "tanh", "softmax", "cross_entropy",
                                              dtype, name)
    order = np.concatenate([np.arange(16), 16 + np.random.default_rng(0).permutation(13)])
    fast._workspace(8)
    a0 = fast.activations[0]
    a0[...] = np.nan  # the in-order batches leave it alone; the shuffled ones fill it
    expected = _per_kernel_epoch(ref, opt_ref, X, Y, order[:16], 8)
    got = compiled.train_epoch(fast, opt_fast, X, Y, order[:16], 8)
    assert np.isnan(a0).all()
    np.testing.assert_allclose(got[0], expected[0], **TOL[dtype])
    _per_kernel_epoch(ref, opt_ref, X, Y, order[16:], 8)
    compiled.train_epoch(fast, opt_fast, X, Y, order[16:], 8)
    assert not np.isnan(a0[:5]).any()  # the last, shuffled batch of 5 rows was gathered
    np.testing.assert_allclose(fast.theta, ref.theta, **TOL[dtype])
    np.testing.assert_allclose(fast.nabla_theta, ref.nabla_theta, **TOL[dtype])


def test_every_update_and_batches_share_one_compiled_type():
    """Update.sgd/adam/gradient_only and Batches.of fix their fields' types, whatever
    Python numbers they are given: one specialisation of the compiled epoch per dtype."""
    from numba import typeof

    from gpubp.kernels.epoch_args import NONE, Batches, Update

    x = np.zeros(4)
    updates = [Update.sgd(1, 0, 0, 0, x, np.int64(3)), Update.sgd(0.1, 0.9, True, 0.01, x, 0),
               Update.adam(np.float32(0.1), (0.9, 0.99), (1e-8, False), 0, (x, x), 2),
               Update.adam(0.1, (0.9, 0.99), (1e-8, True), 0, (x, x), 2, penalty=1e-3),
               Update.gradient_only(x)]
    assert len({typeof(tuple(u)) for u in updates}) == 1
    assert updates[1].momentum == 0.9 and updates[1].nesterov is True
    assert updates[2].beta2 == 0.99 and updates[4].code == NONE
    assert updates[3].eps_hat is True and updates[3].penalty == 1e-3
    X = np.zeros((3, 2))
    order = np.arange(3)
    assert typeof(tuple(Batches.of(X, X, order, 2))) == typeof(
        tuple(Batches.of(X, X, order, np.int64(2), np.float32(0.5))))
