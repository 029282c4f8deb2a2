"""Training and inference throughput of the gpubp backends and of the JAX/PyTorch peers.

Every runner does the same work on the same batches (:mod:`gpubp.bench`): SGD epochs of
an MLP with sigmoid hidden layers and softmax + cross-entropy in float32, or forward-only
inference. ``extra_info`` records samples/s, GFLOP/s and, for training, the fraction of
the GEMM-only bound (the same step's matrix products alone, timed in the same test).
Runners that cannot run here (no GPU, peer not installed) are skipped with the reason.
Nothing is asserted about speed: timings on a shared machine are not test outcomes.
"""

import statistics

import pytest

from gpubp import bench

RUNNERS = ("reference", "cpu") + bench.CUDA_VARIANTS + bench.PEERS
CASES = {case.name: case for case in bench.CASES}
ROUNDS = 5


def _runner(name, case, batches, train):
    try:
        return bench.make_runner(name, case, batches, train)
    except bench.Unavailable as exc:
        pytest.skip(str(exc))


def _record(benchmark, case, batches, train, timing, gemm_runner=None):
    """Time (or, untimed, run once) and record throughput in ``extra_info``."""
    if not timing:
        return
    seconds = benchmark.stats.stats.median
    samples = len(batches) * case.batch_size
    info = benchmark.extra_info
    info["samples_per_s"] = samples / seconds
    info["gflops"] = case.flops(train) * len(batches) / seconds / 1e9
    if gemm_runner is not None:
        gemm = statistics.median(bench.time_epochs(gemm_runner, repeats=ROUNDS))
        info["gemm_only_fraction"] = gemm / seconds


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("runner", RUNNERS)
def test_train_epoch(benchmark, runner, case_name, epoch_batches, timing):
    case = CASES[case_name]
    batches = epoch_batches(case)
    epoch = _runner(runner, case, batches, train=True)
    gemm = None
    if timing:
        gemm = _runner("gemm-only-cuda" if "cuda" in runner else "gemm-only", case, batches,
                       train=True)
    benchmark.group = f"train {case_name}"
    benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1 if timing else 0)
    _record(benchmark, case, batches, True, timing, gemm)


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("runner", RUNNERS)
def test_inference_epoch(benchmark, runner, case_name, epoch_batches, timing):
    case = CASES[case_name]
    batches = epoch_batches(case)
    epoch = _runner(runner, case, batches, train=False)
    benchmark.group = f"inference {case_name}"
    benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1 if timing else 0)
    _record(benchmark, case, batches, False, timing)


@pytest.mark.parametrize("case_name", list(CASES))
def test_gemm_only_bound(benchmark, case_name, epoch_batches, timing):
    """The bound itself: one training step's matrix products alone, on the CPU."""
    case = CASES[case_name]
    batches = epoch_batches(case)
    epoch = _runner("gemm-only", case, batches, train=True)
    benchmark.group = f"train {case_name}"
    benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1 if timing else 0)
    _record(benchmark, case, batches, True, timing)
