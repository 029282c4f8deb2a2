"""Training and inference throughput of the gpubp backends and of the JAX/PyTorch peers.

Every runner does the same work on the same batches (:mod:`gpubp.bench.runners`): for
gpubp, an epoch of :meth:`gpubp.Network.fit` itself (the user's path); for the peers, the
same SGD steps at their best (JAX ``jit`` on preloaded batches, with and without donation;
PyTorch eager), float32, sigmoid hidden layers, softmax + cross-entropy. Under
``pytest --benchmark`` each runner runs in processes of its own (:class:`gpubp.bench.compare.Worker`,
two taking turns), so no framework's idle threads slow another's; pytest-benchmark times the round trip,
and ``extra_info`` records the best epoch as the worker timed it (samples/s, GFLOP/s and,
for training, the fraction of the GEMM-only bound, timed in its own worker by the same
test). Pytest runs the tests one after the other: for alternating rounds across the
runners use ``gpubp bench``. A plain ``pytest`` runs one small epoch of each runner
in-process, untimed, so that the benchmarks cannot rot. Runners that cannot run here (no
GPU, peer not installed) are skipped with the reason. Nothing is asserted about speed.
"""

import itertools

import pytest

from gpubp.bench import compare as bench

RUNNERS = ("reference", "cpu") + bench.CUDA_VARIANTS + bench.PEERS
CASES = {case.name: case for case in bench.CASES}
ROUNDS = 5
# worker processes per runner, taking turns: a process's speed on two BLAS threads is
# bimodal and fixed for its life (see gpubp.bench.compare.measure), so one process could hand a
# runner its slow mode by chance
PROCESSES = 2


def _epoch(runner, case, n_batches, train, timing, workers):
    """A callable timing one epoch: in worker processes when timing, in-process otherwise."""
    if runner == "torch-compile" and not timing:
        pytest.skip("torch.compile takes minutes to compile: timed runs only (--benchmark)")
    try:
        if timing:
            started = []
            for _ in range(PROCESSES):
                started.append(bench.Worker(runner, case, n_batches, train))
                workers.append(started[-1])
            turns = itertools.cycle(started)
            return lambda: next(turns).epoch()
        return bench.make_runner(runner, case, bench.make_batches(case, n_batches), train)
    except bench.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def workers():
    started = []
    yield started
    for worker in started:
        worker.close()


def _run(benchmark, runner, case_name, train, timing, workers, group):
    case = CASES[case_name]
    n_batches = max(1, bench.SAMPLES_PER_EPOCH // case.batch_size) if timing else 1
    epoch = _epoch(runner, case, n_batches, train, timing, workers)
    seconds = []
    benchmark.group = f"{group} {case_name}"
    benchmark.pedantic(lambda: seconds.append(epoch()), rounds=ROUNDS,
                       warmup_rounds=1 if timing else 0)
    if not timing:
        return None
    best = min(seconds)
    info = benchmark.extra_info
    info["best_epoch_s"] = best
    info["samples_per_s"] = n_batches * case.batch_size / best
    info["gflops"] = case.flops(train) * n_batches / best / 1e9
    return case, n_batches, best


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("runner", RUNNERS)
def test_train_epoch(benchmark, runner, case_name, timing, workers):
    measured = _run(benchmark, runner, case_name, True, timing, workers, "train")
    if measured is not None:
        case, n_batches, best = measured
        gemm = _epoch("gemm-only-cuda" if "cuda" in runner else "gemm-only", case, n_batches,
                      True, timing, workers)
        benchmark.extra_info["gemm_only_fraction"] = min(gemm() for _ in range(ROUNDS)) / best


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("runner", RUNNERS)
def test_inference_epoch(benchmark, runner, case_name, timing, workers):
    _run(benchmark, runner, case_name, False, timing, workers, "inference")


@pytest.mark.parametrize("case_name", list(CASES))
def test_gemm_only_bound(benchmark, case_name, timing, workers):
    """The bound itself: one training epoch's matrix products alone, on the CPU."""
    _run(benchmark, "gemm-only", case_name, True, timing, workers, "train")
