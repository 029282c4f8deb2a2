"""``fit(cuda_graph=...)``: a whole step captured once per batch shape and replayed.

The fake CuPy (``tests/fake_cupy.py``) records what a stream capture records (kernel
launches and device operations into existing arrays) and refuses what CUDA refuses
during one (a device→host read, a synchronisation, an allocation); its ``Graph.launch``
replays the record. That is enough to test the logic of ``gpubp.backends.cuda_graph``:
one capture per batch shape, the batch's start advanced on the device so one graph serves
every step, the last short batch, the check against an eager step and its fallback.
"""

import numpy as np
import pytest

import gpubp
from gpubp.backends import cuda as cuda_backend
from gpubp.backends import cuda_graph
from tests import fake_cupy
from tests.test_cuda_host_transfers import _data, _net, fake_gpu  # noqa: F401 - the fixture


@pytest.fixture(autouse=True)
def unchecked(monkeypatch):
    """Each test starts in a process that has not checked a graph yet."""
    monkeypatch.setitem(cuda_graph.VERIFIED, "graph", None)


def _fit(net, X, Y, **kw):
    kw = {"epochs": 2, "batch_size": 32, "verbose": 0, "lr": 0.1, "shuffle": True, **kw}
    return net.fit(X, Y, **kw)


def _same(a, b):
    np.testing.assert_array_equal(a.backend.to_host(a.theta), b.backend.to_host(b.theta))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_one_capture_serves_every_step(fake_gpu, optimizer):
    X, Y = _data()  # 256 rows: 8 steps of 32 per epoch
    eager, graphed = _net(), _net()
    h_eager = _fit(eager, X, Y, optimizer=optimizer, cuda_graph=False).history
    h_graph = _fit(graphed, X, Y, optimizer=optimizer, cuda_graph="auto").history
    assert h_graph == h_eager  # loss and accuracy, bit for bit
    _same(graphed, eager)
    # epoch 1: a warm-up step, a captured one (checked: an eager run and a replay), then
    # 6 replays; epoch 2: 8 replays of the same graph
    assert fake_gpu.captures == 1
    assert fake_gpu.graph_launches == 1 + 6 + 8
    assert cuda_graph.VERIFIED["graph"] is True


def test_the_short_last_batch_has_its_own_graph(fake_gpu):
    X, Y = _data(P=250)  # 7 batches of 32 and one of 26
    eager, graphed = _net(), _net()
    h_eager = _fit(eager, X, Y, epochs=3, cuda_graph=False).history
    h_graph = _fit(graphed, X, Y, epochs=3, cuda_graph=True).history
    assert h_graph == h_eager
    _same(graphed, eager)
    assert fake_gpu.captures == 2  # (32, lr) and (26, lr)
    # True: no check. 32: warm-up, then the captured step and 5 more replayed, then 7
    # and 7; 26: warm-up, then 1 and 1
    assert fake_gpu.graph_launches == (6 + 7 + 7) + (0 + 1 + 1)
    assert cuda_graph.VERIFIED["graph"] is None


@pytest.fixture(autouse=True)
def keep_graphs(monkeypatch):
    """Remember the last StepGraphs made (a fit's plan, which is not returned)."""
    made = []
    init = cuda_graph.StepGraphs.__init__

    def remember(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(cuda_graph.StepGraphs, "__init__", remember)
    return made


def test_offset_counts_the_epoch_rows(fake_gpu, keep_graphs):
    X, Y = _data(P=250)
    _fit(_net(), X, Y, epochs=2, cuda_graph=True)
    [graphs] = keep_graphs
    assert int(graphs.offset[0]) == 250  # every row of the last epoch, on the device
    assert graphs.counts == {"eager": 2, "captured": 2, "replayed": 2 * 8 - 2}


def test_a_graph_that_differs_falls_back_with_a_warning(fake_gpu, monkeypatch):
    X, Y = _data()
    eager = _net()
    h_eager = _fit(eager, X, Y, cuda_graph=False).history
    launch = fake_cupy._Graph.launch

    def off_by_one_bit(self, stream=None):  # a graph that gets one step slightly wrong
        launch(self, stream)
        theta = net.theta.data_
        theta[0] = np.nextafter(theta[0], np.inf)

    monkeypatch.setattr(fake_cupy._Graph, "launch", off_by_one_bit)
    net = _net()
    with pytest.warns(RuntimeWarning, match="differs from the eager step"):
        h = _fit(net, X, Y, cuda_graph="auto").history
    assert cuda_graph.VERIFIED["graph"] is False
    assert fake_gpu.graph_launches == 1  # the check's replay only: eager from then on
    assert h == h_eager  # the eager result stood
    _same(net, eager)
    before = fake_gpu.graph_launches
    _fit(_net(), X, Y, cuda_graph="auto")  # the rest of the process: no graphs
    assert fake_gpu.graph_launches == before


def test_a_replayed_step_runs_no_python_launch(fake_gpu, monkeypatch):
    """The backend's kernel calls run in the warm-up step and the captured one only."""
    calls = []
    launch = cuda_backend.CudaBackend._launch
    monkeypatch.setattr(cuda_backend.CudaBackend, "_launch",
                        lambda self, name, *a: calls.append(name) or launch(self, name, *a))
    X, Y = _data()  # 8 steps
    _fit(_net(), X, Y, epochs=1, cuda_graph=False)
    eager = len(calls)
    calls.clear()
    _fit(_net(), X, Y, epochs=1, cuda_graph=True)
    # the warm-up step and the captured one, each with its two gathers (X, Y) in place
    # of the eager step's cupy.take
    assert eager % 8 == 0 and len(calls) == 2 * (eager // 8 + 2)
    assert calls.count("gather_rows") == 4


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_values_are_refused(fake_gpu, value):
    X, Y = _data()
    with pytest.raises(ValueError, match="cuda_graph must be 'auto', True or False"):
        _fit(_net(), X, Y, cuda_graph=value)


def test_true_where_graphs_cannot_run_says_why(fake_gpu):
    X, Y = _data()
    with pytest.raises(ValueError, match="optimizer 'adam'"):
        _fit(_net(), X, Y, optimizer="adam", cuda_graph=True)
    with pytest.raises(ValueError, match="sample or class weights"):
        _fit(_net(), X, Y, sample_weight=np.ones(len(X)), cuda_graph=True)
    cpu = gpubp.Network([6, 8, 3], device="cpu", backend="reference", seed=0)
    with pytest.raises(ValueError, match="needs device='cuda'"):
        _fit(cpu, X, Y, cuda_graph=True)
    _fit(cpu, X, Y, cuda_graph="auto")  # "auto" on the CPU: eager, as always
    # "auto" where graphs cannot run: eager steps, no capture
    _fit(_net(), X, Y, optimizer="adam", cuda_graph="auto")
    assert getattr(fake_gpu, "captures", 0) == 0


def test_a_capture_refuses_reads_and_allocations(fake_gpu):
    xp = fake_cupy.module()
    x = xp.zeros(3)
    stream = xp.cuda.Stream(non_blocking=True)
    with pytest.raises(RuntimeError, match="default"):
        xp.cuda.Stream(ptr=0).begin_capture()
    with stream:
        stream.begin_capture()
        x += 1  # recorded, not run
        with pytest.raises(RuntimeError, match="allocation during a CUDA stream capture"):
            xp.ones(2)
        with pytest.raises(RuntimeError, match="copy during a CUDA stream capture"):
            float(x[0])
        graph = stream.end_capture()
    assert x.data_.tolist() == [0, 0, 0]
    graph.launch(stream)
    graph.launch(stream)
    assert x.data_.tolist() == [2, 2, 2]


def test_the_graph_kernels_in_the_simulator():
    from tests.test_cuda_kernels import TESTS, run_simulated

    run_simulated(TESTS / "cudasim_graph.py", timeout=600)


@pytest.mark.parametrize("mode", [False, True])
def test_a_new_learning_rate_is_new_launches_and_a_new_graph(fake_gpu, mode):
    """The bound launches and the graphs are keyed by the learning rate: a per-epoch
    schedule trains at each epoch's rate within one fit (as the reference backend)."""
    from gpubp.optim.schedules import StepDecay

    X, Y = _data()
    got = _net()
    want = gpubp.Network([6, 8, 3], hidden="tanh", output="softmax", loss="cross_entropy",
                         backend="reference", seed=0)
    for net in (got, want):
        net.fit(X, Y, epochs=3, batch_size=32, verbose=0, lr=0.1, shuffle=False,
                schedule=StepDecay(step_size=1, gamma=0.2),
                **({"cuda_graph": mode} if net is got else {}))
    for a, b in zip(*(n.get_params()[0] for n in (got, want))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_grown_workspaces_are_captured_anew(fake_gpu, keep_graphs):
    """Workspaces that grow between epochs (here by hand, as a larger evaluation chunk
    would) get new graphs; the old ones stay alive while graphs captured on them exist."""
    from gpubp.training.callbacks import Callback

    class Grow(Callback):
        def on_epoch_end(self, run, epoch, logs):
            if epoch == 0:
                net._workspace(100)  # larger than the batch: new buffers

    X, Y = _data()
    net = _net()
    eager = _net()
    h_eager = _fit(eager, X, Y, epochs=2, cuda_graph=False).history
    h = _fit(net, X, Y, epochs=2, cuda_graph=True, callbacks=[Grow()]).history
    assert h == h_eager
    _same(net, eager)
    [graphs] = keep_graphs[-1:]
    assert graphs.counts["captured"] == 2  # one per workspace generation
    assert len(graphs._held) == 2
