"""Data-parallel scaling on one machine (gpubp.bench.scaling, ``gpubp bench --scaling``).

Under ``pytest --benchmark`` this runs the issue's configuration, 784-1024-1024-10 with a
global batch of 512: 1 rank x 1 BLAS thread, 2 ranks x 1 thread, 1 rank x 2 threads, and
records samples/s, speed-up, parallel efficiency and the communication share in
``extra_info``, for each way of summing the gradients (shared memory, per-layer
``Iallreduce``, one ``Allreduce``). In a plain ``pytest`` run it only checks, on a tiny network, that the three
configurations run and report sane figures. Nothing is asserted about speed.
"""

import pytest

from gpubp.bench import scaling as bench_scaling

pytest.importorskip("mpi4py")


@pytest.mark.parametrize("reduction", list(bench_scaling.REDUCTIONS))
def test_scaling(benchmark, timing, reduction):
    kwargs = {"reduction": reduction}
    if not timing:
        kwargs.update(sizes=(16, 8, 4), batch_size=32, steps=2, repeats=1)
    results = benchmark.pedantic(bench_scaling.run_scaling, kwargs=kwargs, rounds=1,
                                 iterations=1)
    assert [r["ranks"] for r in results] == [1, 2, 1]
    for r in results:
        assert r["samples_per_s"] > 0 and 0 <= r["comm_share"] <= 1
    if timing:
        for r in results:
            benchmark.extra_info[r["configuration"]] = {
                k: r[k] for k in ("samples_per_s", "speedup", "efficiency", "comm_share")}
