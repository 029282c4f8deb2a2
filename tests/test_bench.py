"""``gpubp.bench.compare``: the comparison table runs end to end (timings are never asserted)."""

import io

import pytest

from gpubp.bench import compare as bench
from gpubp.bench import peers, runners


def test_parse_case():
    case = bench.parse_case("784-128-10@64")
    assert case.sizes == (784, 128, 10) and case.batch_size == 64
    assert case.name == "784-128-10@64"
    assert case.flops() == 6 * 64 * (784 * 128 + 128 * 10)
    assert case.flops(train=False) == case.flops() // 3
    with pytest.raises(ValueError, match="784-128-10@64"):
        bench.parse_case("784x128")


def test_run_bench_prints_every_runner():
    out = io.StringIO()
    rows = bench.run_bench(["12-7-3@5"], backends=["reference", "cpu"], peers=False,
                           repeats=1, file=out, inference=True, samples_per_epoch=10,
                           processes=1)
    text = out.getvalue()
    for word in ("Training", "Inference", "reference", "cpu", "gemm-only", "% GEMM bound",
                 "% of bound"):
        assert word in text
    bound = next(r for r in rows if r["runner"] == "bound")
    assert set(bound["bound_parts"]) == {"gemm", "activation", "update"}
    assert bound["seconds"] == bound["bound_seconds"] == pytest.approx(
        sum(bound["bound_parts"].values()), rel=1e-12)
    train = next(r for r in rows if r["runner"] == "cpu")
    assert train["samples_per_s"] > 0 and train["speedup"] > 0
    # None ("-") when the GEMM-only bound timed slower than the step it bounds: on a case
    # this tiny, timing noise (docs/benchmarks.md)
    assert train["gemm_fraction"] is None or 0 < train["gemm_fraction"] <= 1


def test_the_bound_column_is_the_sum_of_its_parts_over_the_runners_time(monkeypatch):
    """``% of bound`` = (gemm + activation + update seconds of the bound runner's best
    epoch) / the runner's best epoch; fixed timings stand in for the workers."""
    seconds = {"cpu": [4.0, 2.0], "gemm-only": [0.5, 0.6], "bound": [1.5, 1.0]}
    parts = [{"gemm": 0.5, "activation": 0.75, "update": 0.25},
             {"gemm": 0.5, "activation": 0.3, "update": 0.2}]

    class Timed:
        def __init__(self, runner, case, n_batches, train=True):
            self.runner, self.k, self.parts = runner, 0, None

        def epoch(self):
            self.parts = parts[self.k] if self.runner == "bound" else None
            self.k += 1
            return seconds[self.runner][self.k - 1]

        def close(self):
            pass

    monkeypatch.setattr(bench, "Worker", Timed)
    rows = bench.measure(["8-6-3@4"], backends=["cpu"], peers=False, repeats=2,
                         samples_per_epoch=8, processes=1)
    cpu, bound = (next(r for r in rows if r["runner"] == n) for n in ("cpu", "bound"))
    assert bound["bound_parts"] == parts[1] and bound["seconds"] == 1.0
    assert cpu["bound_seconds"] == 1.0 and cpu["bound_fraction"] == 1.0 / 2.0
    assert bound["bound_fraction"] is None and bound["gemm_fraction"] is None  # bounds
    assert cpu["gemm_fraction"] == 0.5 / 2.0
    table = bench.format_table(rows)
    assert "% of bound" in table.splitlines()[0]
    assert [line.split()[-1] for line in table.splitlines() if " cpu " in line] == ["50%"]
    assert runners.make_runner.__doc__.count("bound")


def test_each_runner_is_timed_in_its_own_process():
    case = bench.parse_case("8-6-3@4")
    with bench.Worker("cpu-blas1", case, n_batches=3) as worker:
        seconds = [worker.epoch() for _ in range(2)]
        pid = worker._proc.pid
    assert all(s > 0 for s in seconds) and pid != __import__("os").getpid()
    rows = bench.measure([case], backends=["cpu-blas1", "cpu-blas2"], peers=False,
                         repeats=2, samples_per_epoch=12, processes=1)
    assert {r["runner"] for r in rows} == {"cpu-blas1", "cpu-blas2", "gemm-only", "bound"}
    assert all(r["seconds"] <= r["median_seconds"] for r in rows)


def test_every_runner_gets_fresh_processes(monkeypatch):
    started = []

    class Recorded(bench.Worker):
        def __init__(self, runner, *args, **kwargs):
            super().__init__(runner, *args, **kwargs)
            started.append((runner, self._proc.pid))

    monkeypatch.setattr(bench, "Worker", Recorded)
    times = {}
    monkeypatch.setattr(bench.statistics, "median",
                        lambda ts: times.setdefault(len(times), list(ts))[0])
    rows = bench.measure(["8-6-3@4"], backends=["cpu"], peers=False, repeats=2,
                         samples_per_epoch=8, processes=3)
    for runner in ("cpu", "gemm-only", "bound"):
        pids = [pid for name, pid in started if name == runner]
        assert len(pids) == len(set(pids)) == 3  # one process after another, never reused
    assert sorted(len(ts) for ts in times.values()) == [6, 6, 6]  # 3 processes x 2 rounds
    assert all(r["seconds"] == min(times[i]) for i, r in enumerate(rows))


def test_workers_let_the_previous_runners_threads_settle(monkeypatch):
    """Before its warm-up and before every timed epoch a worker waits SETTLE seconds, so
    that the spinning idle threads of the runner before it are not timed with it."""
    pauses = []
    monkeypatch.setattr(bench.time, "sleep", pauses.append)
    with bench.Worker("cpu-blas1", bench.parse_case("8-6-3@4"), n_batches=2) as worker:
        assert pauses == [bench.SETTLE]
        worker.epoch()
        worker.epoch()
        assert pauses == [bench.SETTLE] * 3 and bench.SETTLE >= 0.1


def test_gemm_only_of_a_large_step_times_both_thread_counts(monkeypatch):
    from gpubp.core import compiled

    monkeypatch.setattr(compiled, "ONE_THREAD_BELOW", 0)  # every step counts as large
    limits = []
    limiter = compiled.BlasThreads
    monkeypatch.setattr(compiled, "BlasThreads", lambda n: limits.append(n) or limiter(n))
    case = bench.parse_case("12-7-3@5")
    epoch = bench.make_runner("gemm-only", case, bench.make_batches(case, 2))
    assert limits[-1:] == [None]  # the compiling run, on all threads
    del limits[:]
    assert epoch() > 0
    assert limits == [1, None]  # every timing runs both thread counts and keeps the faster


def test_a_failing_worker_says_why():
    with pytest.raises(RuntimeError,
                       match=r"(?s)worker 'nonsense' exited with status 1.*runner must be one"):
        bench.Worker("nonsense", bench.parse_case("4-2@2"), n_batches=1)


def test_unavailable_runners_are_reported_not_raised():
    if "cuda-fused" in bench.default_backends():
        pytest.skip("a GPU is usable here")
    rows = bench.measure(["6-4-2@3"], backends=["cuda-fused"], peers=False, repeats=1,
                         samples_per_epoch=3, processes=1)
    (cuda,) = [r for r in rows if r["runner"] == "cuda-fused"]
    assert cuda["seconds"] is None and "GPU" in cuda["note"]
    assert "skipped" in bench.format_table(rows)


def test_unknown_runner():
    with pytest.raises(ValueError, match="runner must be one of"):
        bench.make_runner("mkl", bench.parse_case("4-2@2"), [], True)


def test_case_names_carry_the_training():
    text = "784-512-512-10@128:gelu,adamw,float32,dropout=0.2,warmup_cosine"
    case = bench.parse_case(text)
    assert (case.activation, case.optimizer, case.dtype, case.dropout, case.schedule) == \
        ("gelu", "adamw", "float32", 0.2, "warmup_cosine")
    assert case.name == text and case.lr == 1e-3
    assert bench.parse_case("64-64-10@32:tanh,momentum,float64").lr == bench.LR
    for bad in ("64-64-10@32:swish,sgd,float32", "64-64-10@32:tanh,sgd", "64-64-10@32:tanh,sgd,"
                "float64,dropout"):
        with pytest.raises(ValueError, match="784-128-10@64"):
            bench.parse_case(bad)
    for c in runners.FULL + runners.QUICK:
        assert bench.parse_case(bench.parse_case(c).name) == bench.parse_case(c)
    assert len(runners.FULL) == 6 * 4 * 4 * 2 + 1


@pytest.mark.parametrize("text", ["6-5-3@4:tanh,momentum,float64",
                                  "6-5-3@4:relu,adam,float64"])
def test_peers_train_like_gpubp(text):
    # One epoch of each peer and of gpubp's fit from the same parameters over the same
    # rows in the same order: the same parameters after it (the same network, the same
    # optimizer, the same steps).
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    import numpy as np

    case = bench.parse_case(text)
    X, Y = runners._stacked(bench.make_batches(case, 8))
    params = list(zip(*runners.init_params(case.sizes, case.dtype)))
    order = np.random.default_rng(0).permutation(X.shape[0])
    net = bench.make_network("cpu", case)
    net.fit(X[order], Y[order], epochs=1, batch_size=4, shuffle=False, verbose=0,
            optimizer=runners.make_optimizer(case))
    for name in ("jax-scan", "jax-jit", "jax-jit-nodonate", "torch-eager"):
        build = peers.jax_runner if name.startswith("jax") else peers.torch_runner
        run = build(name, case, X, Y, [tuple(np.copy(a) for a in p) for p in params], case.lr)
        run(order)
        for l, (W, b) in enumerate(run.params()):
            np.testing.assert_allclose(W, net.W[l], rtol=1e-7, atol=1e-10, err_msg=name)
            np.testing.assert_allclose(b, net.b[l], rtol=1e-7, atol=1e-10, err_msg=name)


def test_the_issue_19_case_trains_gelu_with_dropout():
    # the shape of the issue-19 case (784-512-512-10@128: gelu, dropout, AdamW, warm-up
    # and cosine per step), small: gpubp runs it, and the masks change the run
    runs = {}
    dropping = runners.parse_case("16-8-8-4@8:gelu,adamw,float32,dropout=0.2,warmup_cosine")
    for case in (dropping, runners.parse_case("16-8-8-4@8:gelu,adamw,float32,warmup_cosine")):
        batches = runners.make_batches(case, 3)
        net = runners.make_network("cpu", case)
        X, Y = runners._stacked(batches)
        seconds = runners._fit_epoch(net, X, Y, case)()
        assert seconds > 0 and net.dropout == [case.dropout] * 2
        runs[case.dropout] = net.W[0].copy()
    assert abs(runs[0.2] - runs[0.0]).max() > 1e-6
    epoch = runners.make_runner("cpu", dropping, runners.make_batches(dropping, 3))
    assert epoch() > 0  # not Unavailable
