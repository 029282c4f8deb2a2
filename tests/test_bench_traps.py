"""gpubp bench for a new user (issue 18): arguments checked before any worker starts, the
expected duration stated first, progress while it runs, one-line worker errors, and no
"% GEMM bound" above 100%."""

import io
import re

import pytest

import gpubp.bench.compare
from gpubp.bench.compare import Case, Worker, measure, parse_case, run_bench
from gpubp.cli.commands import main


@pytest.mark.parametrize("text", ["4-8-3@0", "4-0-3@8", "5@3", "4-8-3@-2"])
def test_parse_case_refuses_zero_and_missing_sizes(text):
    with pytest.raises(ValueError, match=r"case must look like '784-128-10@64'.*all positive"):
        parse_case(text)


@pytest.fixture
def no_workers(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a worker started before the arguments were checked")

    monkeypatch.setattr(gpubp.bench.compare, "Worker", refuse)


@pytest.mark.parametrize("argv,pattern", [
    (["--case", "4-8-3@0"], r"--case: case must look like .*got '4-8-3@0'"),
    (["--backend", "tpu"], r"--backend must be one of reference, cpu, cuda, .*got 'tpu'"),
    (["--scaling", "--case", "4-8-3@8"], r"--case does not apply to --scaling"),
    (["--scaling", "--processes", "2"], r"--processes does not apply to --scaling"),
    (["--peer", "jax-pmap"], r"--peer must be one of jax-scan, .*got 'jax-pmap'"),
    (["--case", "4-8-3@2:swish,sgd,float32"], r"--case: case must look like .*swish"),
    (["--scaling", "--matrix", "quick"], r"--matrix does not apply to --scaling"),
    (["--scaling", "--peer", "jax-scan"], r"--peer does not apply to --scaling"),
    (["--fused"], r"--fused applies only with --scaling"),
    (["--ranks", "4"], r"--ranks applies only with --scaling"),
    (["--scaling", "--fused", "--reduction", "shared"], r"--fused is an allreduce"),
])
def test_bench_arguments_are_checked_first(no_workers, argv, pattern, capsys):
    assert main(["bench", *argv]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(pattern, err), err


def _fake_rounds(seconds):
    def rounds(case, n_batches, train, runners, repeats, found, progress=(None, "")):
        (notes, times, parts), (bar, _) = found, progress
        for name in runners:
            if name in seconds:
                times.setdefault(name, []).append(seconds[name])
                parts.setdefault(name, []).append(None)  # only the bound runner has parts
                if bar is not None:
                    bar.update(1 + repeats)
            else:
                notes[name] = "not here"
                if bar is not None:
                    bar.total -= 1 + repeats
    return rounds


def test_a_bound_slower_than_its_runner_is_not_reported(monkeypatch):
    # a tiny step: the GEMM-only epoch is all per-call overhead, slower than fit itself
    monkeypatch.setattr(gpubp.bench.compare, "_rounds",
                        _fake_rounds({"reference": 1.0, "cpu": 0.01, "gemm-only": 0.5}))
    rows = {r["runner"]: r for r in measure(["4-8-3@8"], ["reference", "cpu"], peers=False,
                                             repeats=1, processes=1)}
    assert rows["reference"]["gemm_fraction"] == 0.5
    assert rows["cpu"]["gemm_fraction"] is None  # was 50, printed "5000%"
    table = gpubp.bench.compare.format_table(list(rows.values()))
    assert not re.search(r"\d{3,}%", table)


def test_run_bench_states_the_duration_first_and_shows_progress(monkeypatch):
    monkeypatch.setattr(gpubp.bench.compare, "_rounds",
                        _fake_rounds({"reference": 1.0, "cpu": 0.5, "gemm-only": 0.25}))
    out, progress = io.StringIO(), io.StringIO()
    run_bench(["4-8-3@8", "16-8-3@8"], ["reference", "cpu"], peers=False, repeats=2,
              file=out, processes=1, progress=progress)
    first = out.getvalue().splitlines()[0]
    assert re.match(r"2 case\(s\) x 1 process\(es\) per runner x 2 rounds: expect roughly "
                    r"\d+ (s|min)", first), first
    assert "4-8-3@8" in progress.getvalue() and "16-8-3@8" in progress.getvalue()


def test_expected_seconds_grows_with_the_work():
    small = gpubp.bench.compare.expected_seconds([Case((4, 3), 8)], ("reference",), False, 1, True,
                                         64, 1)
    big = gpubp.bench.compare.expected_seconds([Case((784, 1024, 1024, 10), 256)], ("reference",),
                                       False, 5, True, 4096, 3)
    assert 0 < small < 60 < 300 < big


def test_a_failing_worker_is_one_line():
    with pytest.raises(RuntimeError) as exc:
        Worker("tpu", Case((4, 3), 2), 1)
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("benchmark worker 'tpu' exited with status 1: ValueError: "
                              "runner must be one of"), message


def test_peers_are_chosen_by_name(monkeypatch):
    monkeypatch.setattr(gpubp.bench.compare, "_rounds", _fake_rounds(
        {"cpu": 1.0, "gemm-only": 0.5, "jax-scan": 2.0, "torch-eager": 4.0}))
    rows = gpubp.bench.compare.run_bench(["4-8-3@2"], backends=["cpu"],
                                         peers=["jax-scan", "torch-eager"], repeats=1,
                                         file=io.StringIO(), progress=None)
    assert [r["runner"] for r in rows] == ["cpu", "gemm-only", "bound", "jax-scan", "torch-eager"]
    assert next(r for r in rows if r["runner"] == "cpu")["vs_peer"] == 2.0
    with pytest.raises(ValueError, match="peers must be among jax-scan.*'jax-pmap'"):
        gpubp.bench.compare.run_bench(["4-8-3@2"], peers=["jax-pmap"], file=io.StringIO())
