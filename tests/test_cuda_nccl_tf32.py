"""TF32 GEMMs and the device-gradient reductions (NCCL, its MPI fallback) on the fake CuPy.

The fake (``tests/fake_cupy.py``) records CuPy's compute type as gpubp sets it, and the
events and streams the NCCL reduction uses, so that their order can be checked here; the
arithmetic runs on a real GPU in ``benchmarks/gpu_check.py``.
"""

import types

import numpy as np
import pytest

import gpubp
from gpubp.distributed import nccl as nccl_sum
from gpubp.distributed import ranks
from tests import fake_cupy
from tests.test_cuda_host_transfers import _data, fake_gpu  # noqa: F401 - the fixture


def _gemm_types(monkeypatch, ledger):
    """CuPy's float32 compute type at each of gpubp's GEMMs."""
    import cupy

    seen, matmul = [], cupy.matmul

    def recording(*args, **kwargs):
        seen.append(ledger.compute_types.get(np.dtype(np.float32)))
        return matmul(*args, **kwargs)

    monkeypatch.setattr(cupy, "matmul", recording)
    return seen


def _net(**kw):
    return gpubp.Network([6, 8, 3], hidden="tanh", output="softmax", loss="cross_entropy",
                         device="cuda", seed=0, fallback=False, **kw)


@pytest.mark.parametrize("weight_grad", ["fused", "cublas"])
def test_tf32_is_set_for_the_gemms_of_its_network_only(fake_gpu, monkeypatch, weight_grad):
    seen = _gemm_types(monkeypatch, fake_gpu)
    X, Y = _data()
    _net(precision="tf32", weight_grad=weight_grad).fit(X, Y, epochs=1, batch_size=64,
                                                         verbose=0)
    assert seen and set(seen) == {7}, seen  # CUBLAS_COMPUTE_32F_FAST_TF32
    seen.clear()
    _net(weight_grad=weight_grad).fit(X, Y, epochs=1, batch_size=64, verbose=0)
    assert seen and set(seen) == {1}, seen  # exact float32 again: the default


def test_float64_gemms_are_left_alone(fake_gpu, monkeypatch):
    seen = _gemm_types(monkeypatch, fake_gpu)
    X, Y = _data()
    _net(precision="tf32", dtype="float64").fit(X, Y, epochs=1, batch_size=64, verbose=0)
    assert seen and set(seen) == {None}


def test_precision_is_checked():
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'tf32'\), "
                                         r"got 'bf16'"):
        gpubp.Network([3, 2], precision="bf16")


# -- NCCL ------------------------------------------------------------------------------------


class _Comm:
    """``allgather`` answering with the given ranks' values (this process is rank 0)."""

    def __init__(self, others=()):
        self.others = list(others)
        self.summed = []

    def allgather(self, value):
        return [value, *self.others]

    def Allreduce(self, where, buffer, op):
        self.summed.append(buffer.copy())
        buffer *= 2  # as if a second rank held the same gradient


def _nccl_module(monkeypatch, available=True):
    import cupy

    nccl = types.SimpleNamespace(available=available, NCCL_FLOAT32=7, NCCL_FLOAT64=8,
                                 NCCL_SUM=0)
    if available:
        nccl.NcclCommunicator = object
    cupy.cuda.nccl = nccl
    monkeypatch.setitem(__import__("sys").modules, "cupy.cuda", cupy.cuda)
    monkeypatch.setitem(__import__("sys").modules, "cupy.cuda.nccl", nccl)
    cupy.cuda.Device.pci_bus_id = "0000:1a:00.0"
    return nccl


def test_nccl_is_usable_with_one_gpu_per_rank(fake_gpu, monkeypatch):
    _nccl_module(monkeypatch)
    assert nccl_sum.nccl_unusable(_Comm([(None, ("other-host", "0000:1a:00.0"))])) is None


def test_ranks_sharing_a_gpu_are_named(fake_gpu, monkeypatch):
    _nccl_module(monkeypatch)
    import socket

    why = nccl_sum.nccl_unusable(_Comm([(None, (socket.gethostname(), "0000:1a:00.0"))]))
    assert why == (f"ranks [0, 1] share GPU 0000:1a:00.0 on {socket.gethostname()}, and NCCL "
                   f"needs one GPU per rank")


def test_a_missing_libnccl_is_a_reason_not_an_attribute_error(fake_gpu, monkeypatch):
    _nccl_module(monkeypatch, available=False)
    assert nccl_sum.nccl_unusable(_Comm([(None, ("b", "x"))])) == \
        "rank 0: CuPy cannot load the NCCL library (libnccl)"
    # one rank's failure is every rank's answer
    _nccl_module(monkeypatch)
    assert nccl_sum.nccl_unusable(_Comm([("no libnccl", ("b", "x"))])) == "rank 1: no libnccl"


def test_the_group_falls_back_to_the_host_with_a_warning(fake_gpu, monkeypatch):
    _nccl_module(monkeypatch)
    net = _net()
    net._workspace(8)
    import socket

    group = types.SimpleNamespace(reduction=None, _reductions={},
                                  comm=_Comm([(None, (socket.gethostname(), "0000:1a:00.0"))]))
    with pytest.warns(RuntimeWarning, match=r"reduction 'nccl' cannot run \(ranks \[0, 1\] "
                                            r"share GPU .*summed through the host with MPI"):
        made = ranks.Group.reduction_for(group, net)
    assert isinstance(made, nccl_sum.HostStagedGradientSum) and made.name == "allreduce"
    assert ranks.Group.reduction_for(group, net) is made  # once per network and run


def test_the_host_fallback_sums_the_flat_gradient(fake_gpu):
    net = _net()
    net.nabla_theta[...] = np.arange(net.nabla_theta.size, dtype=np.float32)
    comm = _Comm()
    made = nccl_sum.HostStagedGradientSum(net, comm)
    made.begin(4, 8)
    assert made.delta_scale == 0.5
    for l in range(net.L):
        made.layer_done(l)
    assert not comm.summed  # nothing before wait
    reads = len(fake_gpu.d2h)
    made.wait()
    assert len(fake_gpu.d2h) == reads + 1  # one copy to the host per step
    np.testing.assert_array_equal(net.nabla_theta.get(),
                                  2 * np.arange(net.nabla_theta.size, dtype=np.float32))


def test_nccl_sums_on_its_own_stream_after_each_layer_is_written(fake_gpu, monkeypatch):
    nccl = _nccl_module(monkeypatch)
    import cupy

    net = _net()
    calls = []
    comm = types.SimpleNamespace(allReduce=lambda *a: calls.append(a))
    from gpubp.distributed import reductions

    made = reductions.create_reduction("nccl", net, None, nccl_comm=comm)
    assert made.name == "nccl"
    compute = cupy.cuda.get_current_stream()
    assert made.stream.ptr != compute.ptr and made.stream.non_blocking
    fake_gpu.events.clear()
    made.layer_done(1)  # the output layer's gradient first, as backprop goes
    made.layer_done(0)
    made.wait()
    ev = fake_gpu.events
    side = made.stream.ptr
    # layer l: an event on the compute stream, the NCCL stream waits for it
    assert ev[0][:2] == ("record", compute.ptr) and ev[1] == ("wait_event", side, ev[0][2])
    assert ev[2][:2] == ("record", compute.ptr) and ev[3] == ("wait_event", side, ev[2][2])
    # then the compute stream waits (on the device) for the NCCL stream's last sum
    assert ev[4][:2] == ("record", side) and ev[5] == ("wait_event", compute.ptr, ev[4][2])
    assert len(ev) == 6
    assert calls and all(c[5] == side and c[4] == nccl.NCCL_SUM for c in calls)
    assert [c[2] for c in calls] == [b.size for b in made.buffers[1] + made.buffers[0]]
    assert fake_gpu.counts()["syncs"] == 0
