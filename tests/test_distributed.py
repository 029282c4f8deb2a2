"""Data-parallel training over MPI equals training in one process (gpubp.distributed.ranks).

Ranks are real processes launched with ``mpiexec`` (the mpich wheel's, from the ``mpi``
and ``test`` extras), each launch with a timeout, so that a deadlock fails the test
instead of hanging it. To keep the module short, one launch runs several scenarios
(``distributed_worker.py``); the single-process oracle runs in this process.

Exactness: the batch gradient is a sum over rows, so the ranks' allreduced partial sums
equal the single-process gradient up to the order of additions: float64 parameters agree
to a relative 1e-12, float32 to 1e-5, and History agrees figure by figure (it is itself
summed over the ranks).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from distributed_cases import read_result, result_arrays, run  # noqa: E402

import gpubp  # noqa: E402
from gpubp.training import checkpoint as ckpt_io  # noqa: E402


def _mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        reason = "mpi4py and mpiexec are needed (pip install '.[mpi]')"
        if os.environ.get("CI"):
            pytest.fail(reason + ": the test extra installs them, so CI must have them")
        pytest.skip(reason)
    return found


def launch(n, cases, out, timeout=180, env=None, worker="distributed_worker.py"):
    """Run ``cases`` on ``n`` ranks (each rank running ``worker``, a script beside this
    module); returns the CompletedProcess (never hangs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = out / f"cases-{n}-{time.monotonic_ns()}.json"
    spec.write_text(json.dumps(cases))
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    # one BLAS thread per rank: the ranks are the parallelism (and CI has 2 cores)
    environ.setdefault("OMP_NUM_THREADS", "1")
    environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable,
                           str(HERE / worker), str(spec), str(out)],
                          capture_output=True, text=True, timeout=timeout, env=environ,
                          cwd=str(HERE))


def relative_difference(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def assert_same_run(expected, got, rtol, label):
    """Parameters within ``rtol`` (relative, max-norm) and the same History."""
    (p_ref, h_ref), (p, h) = expected, got
    assert len(p) == len(p_ref)
    for i, (a, b) in enumerate(zip(p_ref, p)):
        assert relative_difference(a, b) <= rtol, (label, i, relative_difference(a, b))
    assert h["epoch"] == h_ref["epoch"], label
    assert h["stop_reason"] == h_ref["stop_reason"], label
    assert h["best_epoch"] == h_ref["best_epoch"], label
    assert sorted(h["history"]) == sorted(h_ref["history"]), label
    for key, values in h_ref["history"].items():
        np.testing.assert_allclose(h["history"][key], values, rtol=rtol, atol=0,
                                   err_msg=f"{label}: History[{key!r}]")


def single(case):
    net, history = run(case)
    arrays = result_arrays(net, history)
    params = [arrays[k] for k in sorted(k for k in arrays if k[0] in "Wb" and k != "backend")]
    return params, history.to_dict()


# -- the scenarios ----------------------------------------------------------------------------
EQUAL = [
    # P = 101 in batches of 16: uneven shares on 2 and 3 ranks, a short last batch of 5
    # with the gradient-flow figures: each rank passes over its share, summed over ranks
    {"name": "sgd-f64", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "fit": {"epochs": 3, "batch_size": 16, "lr": 0.1, "gradient_flow": True}},
    # batches of 2 rows on 3 ranks: one rank holds no row of any batch
    {"name": "momentum-tiny-batches", "sizes": [4, 6, 3], "P": 21, "dtype": "float64",
     "fit": {"epochs": 2, "batch_size": 2, "lr": 0.05, "optimizer": "momentum"}},
    # Adam, weight decay, a validation split, early stopping (it stops: see the test), tol
    {"name": "adam-decay-split-stop", "sizes": [5, 7, 6, 3], "P": 90, "dtype": "float64",
     "data_seed": 3, "fit": {"epochs": 40, "batch_size": 10, "optimizer": "adam", "lr": 0.05,
                             "weight_decay": 0.01, "validation_split": 0.2,
                             "early_stopping": 2, "tol": 1e-9}},
    {"name": "sgd-f32", "sizes": [5, 8, 3], "P": 101, "dtype": "float32",
     "fit": {"epochs": 3, "batch_size": 16, "lr": 0.1}},
    # the sums by MPI messages: per-layer Iallreduce, and one Allreduce of the flat vector
    {"name": "momentum-iallreduce", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "group": {"reduction": "iallreduce"},
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.1, "optimizer": "momentum"}},
    {"name": "adam-allreduce", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "group": {"reduction": "allreduce"},
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.05, "optimizer": "adam"}},
    # shared memory, a non-elementwise optimizer: every rank gets the whole sum
    {"name": "spread-sgd", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "spread_sgd": True, "fit": {"epochs": 2, "batch_size": 16, "lr": 0.1}},
    # layers that keep z (gelu) beside those that take g' from a, through the split step
    {"name": "gelu-leaky-split", "sizes": [5, 7, 6, 3], "P": 101, "dtype": "float64",
     "hidden": ["gelu", "leaky_relu"], "fit": {"epochs": 2, "batch_size": 16, "lr": 0.1}},
    # shared parameters, gradients summed slice by slice (no split batches)
    {"name": "momentum-slice-sums", "sizes": [5, 7, 6, 3], "P": 101, "dtype": "float32",
     "group": {"reduction": "slice-sums"},
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.1, "optimizer": "momentum",
             "weight_decay": 0.01}},
    # clipping acts on the summed gradient: by the norm (which reads all of it, so the
    # ranks of a machine cannot share the update), by value (elementwise: they can),
    # and by the norm after an Allreduce; with per-step schedules
    {"name": "adamw-clip-norm", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.05, "optimizer": "adamw",
             "clip_norm": 0.05, "schedule": "one_cycle"}},
    {"name": "rmsprop-clip-value", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.01, "optimizer": "rmsprop",
             "clip_value": 0.01, "schedule": "one_cycle"}},
    {"name": "sgd-clip-value", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.5, "clip_value": 0.002}},
    {"name": "sgd-clip-norm-allreduce", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "group": {"reduction": "allreduce"},
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.5, "clip_norm": 0.05}},
    # dropout: a rank masks its rows by their places in the global batch, so the ranks
    # drop what one process drops; through the split step (gelu keeping z), the compiled
    # step and an Allreduce (batches of 2: on 3 ranks one share of each is empty, and
    # still counts the batch), and the per-kernel step
    {"name": "dropout-gelu-split", "sizes": [5, 7, 6, 3], "P": 101, "dtype": "float64",
     "hidden": ["gelu", "relu"], "dropout": [0.3, 0.2],
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.1}},
    {"name": "dropout-adam-allreduce-tiny", "sizes": [5, 7, 3], "P": 21, "dtype": "float64",
     "group": {"reduction": "allreduce"}, "hidden": "silu", "dropout": 0.4,
     "fit": {"epochs": 2, "batch_size": 2, "lr": 0.05, "optimizer": "adam"}},
    {"name": "dropout-spread", "sizes": [5, 7, 3], "P": 101, "dtype": "float64",
     "spread_sgd": True, "hidden": "elu", "dropout": 0.25,
     "fit": {"epochs": 2, "batch_size": 16, "lr": 0.1}},
]
# the reduction each scenario must have run (the others: "shared", the split step of
# gpubp.distributed.split_step; spread-sgd asks for it too, but its optimizer cannot split)
SUM_PATH = {"momentum-iallreduce": "iallreduce ", "adam-allreduce": "allreduce ",
            "spread-sgd": "slice-sums shares_parameters=False",
            "momentum-slice-sums": "slice-sums shares_parameters=True",
            "adamw-clip-norm": "slice-sums shares_parameters=False",
            "sgd-clip-norm-allreduce": "allreduce ", "dropout-adam-allreduce-tiny": "allreduce ",
            "dropout-spread": "slice-sums shares_parameters=False"}
# 4 ranks as 2 machines of 2 (nodes stand-in): shared memory within, allreduce between
NODES = [dict(case, name=case["name"] + "-nodes", group={"nodes_of": 2})
         for case in EQUAL if case["name"] in ("sgd-f64", "adam-decay-split-stop",
                                               "spread-sgd")]
RESUMED = {"name": "resume", "sizes": [5, 7, 3], "P": 64, "dtype": "float64", "data_seed": 5,
           "fit": {"epochs": 4, "batch_size": 12, "lr": 0.05, "optimizer": "nesterov",
                   "validation_split": 0.25}}


def _first_half(checkpoint):
    case = json.loads(json.dumps(RESUMED))
    case["name"] = "resume-first-half"
    case["fit"].update(epochs=2, checkpoint=str(checkpoint))
    return case


def _second_half(checkpoint, name="resume-second-half"):
    case = json.loads(json.dumps(RESUMED))
    case["name"] = name
    case["fit"].update(resume=str(checkpoint))
    return case


# seed=None: each rank's own generator would differ; rank 0's is broadcast before the split
SEEDLESS = {"name": "seedless", "sizes": [4, 5, 3], "P": 40, "dtype": "float64", "seed": None,
            "fit": {"epochs": 2, "batch_size": 8, "validation_split": 0.25}}

START_ERRORS = [
    {"name": "nan-on-rank-1", "sizes": [4, 3], "P": 30, "spoil": {"rank": 1, "what": "nan"},
     "expect_error": True, "fit": {"epochs": 1}},
    {"name": "fewer-rows-on-rank-1", "sizes": [4, 3], "P": 30,
     "spoil": {"rank": 1, "what": "rows"}, "expect_error": True, "fit": {"epochs": 1}},
    {"name": "mapped-on-rank-1", "sizes": [4, 3], "P": 30,
     "spoil": {"rank": 1, "what": "mapped"}, "expect_error": True, "fit": {"epochs": 1}},
]
# relu and a huge rate: NaN in epoch 0, the parameters of its start (the initial ones) back
DIVERGES = {"name": "diverges", "sizes": [5, 7, 3], "P": 60, "dtype": "float64",
            "hidden": "relu", "expect_error": True,
            "fit": {"epochs": 3, "batch_size": 16, "lr": 1e200}}


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """One launch on 2 ranks (also writing a checkpoint), then one on 3 (resuming it)."""
    out = tmp_path_factory.mktemp("distributed")
    checkpoint = out / "half.npz"
    done = {}
    for n, cases in ((2, EQUAL + [_first_half(checkpoint), SEEDLESS, DIVERGES] + START_ERRORS),
                     (3, EQUAL + [_second_half(checkpoint)]), (4, NODES)):
        proc = launch(n, cases, out / f"n{n}", timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        done[n] = out / f"n{n}"
    done["checkpoint"] = checkpoint
    return done


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("case", EQUAL, ids=[c["name"] for c in EQUAL])
def test_ranks_end_with_the_single_process_result(launches, case, n):
    expected = single(case)
    rtol = 1e-5 if case["dtype"] == "float32" else 1e-12
    for r in range(n):
        got = read_result(launches[n] / f"{case['name']}.rank{r}.npz")
        assert_same_run(expected, got, rtol, f"{case['name']} rank {r} of {n}")
    path = SUM_PATH.get(case["name"], "shared shares_parameters=True")
    for r in range(n):
        assert (launches[n] / f"{case['name']}.rank{r}.sum").read_text().startswith(path)
    if case["name"] == "sgd-f64":
        assert {"grad_norm_W1", "mean_abs_delta2"} <= set(expected[1]["history"])
    if case["name"] == "adam-decay-split-stop":  # the scenario exercises what it names
        history = expected[1]
        assert history["stop_reason"].startswith("early stopping")
        assert {"val_loss", "val_accuracy", "grad_norm"} <= set(history["history"])


@pytest.mark.parametrize("case", NODES, ids=[c["name"] for c in NODES])
def test_machines_of_shared_memory_joined_by_allreduce_equal_one_process(launches, case):
    """Four ranks as two 'machines' of two: each sums in shared memory, the machines'
    slices are allreduced between them; the run equals the single-process one."""
    expected = single(case)
    for r in range(4):
        got = read_result(launches[4] / f"{case['name']}.rank{r}.npz")
        assert_same_run(expected, got, 1e-12, f"{case['name']} rank {r} of 4")
        assert (launches[4] / f"{case['name']}.rank{r}.sum").read_text().endswith("cross=True")
    ranks = [read_result(launches[4] / f"{case['name']}.rank{r}.npz")[0] for r in range(4)]
    assert all(np.array_equal(a, b) for p in ranks[1:] for a, b in zip(ranks[0], p))


def test_divergence_restores_the_shared_parameters_on_every_rank(launches):
    """A diverged epoch ends every rank with the same error and the parameters of that
    epoch's start, each rank's own again (they were shared by the node during the run)."""
    from distributed_cases import make_network

    W0, b0 = make_network(DIVERGES).get_params()
    for r in range(2):
        error = (launches[2] / f"diverges.rank{r}.error").read_text()
        assert error.startswith("TrainingDiverged: training diverged in epoch 0")
        with np.load(launches[2] / f"diverges.rank{r}.after.npz") as data:
            after = [data[f"arr_{i}"] for i in range(len(data.files))]
        assert all(np.array_equal(a, e) for a, e in zip(after, W0 + b0))


def test_every_rank_holds_the_same_bits(launches):
    for n in (2, 3):
        for case in EQUAL + ([SEEDLESS] if n == 2 else []):
            ref, ref_history = read_result(launches[n] / f"{case['name']}.rank0.npz")
            for r in range(1, n):
                params, history = read_result(launches[n] / f"{case['name']}.rank{r}.npz")
                assert all(np.array_equal(a, b) for a, b in zip(ref, params))
                assert history == ref_history


def test_resume_across_rank_counts(launches):
    """A 2-rank checkpoint resumes on 3 ranks and on 1 with the uninterrupted result."""
    uninterrupted = single(RESUMED)
    state = ckpt_io.load(launches["checkpoint"])
    assert state.epoch == 1  # written by rank 0 of the 2-rank run, after its 2 epochs
    on_three = read_result(launches[3] / "resume-second-half.rank0.npz")
    assert_same_run(uninterrupted, on_three, 1e-12, "2 -> 3 ranks")
    on_one = single(_second_half(launches["checkpoint"]))
    assert_same_run(uninterrupted, on_one, 1e-12, "2 -> 1 rank")


def test_a_bad_start_on_one_rank_is_an_error_on_every_rank(launches):
    nan = [(launches[2] / f"nan-on-rank-1.rank{r}.error").read_text() for r in range(2)]
    assert "rank 1 of 2 failed to start" in nan[0] and "finite" in nan[0]
    assert nan[1].startswith("ValueError") and "X must be finite" in nan[1]
    rows = [(launches[2] / f"fewer-rows-on-rank-1.rank{r}.error").read_text() for r in range(2)]
    for text in rows:
        assert "every rank must be given the same X shape" in text
        assert "rank 0: (30, 4)" in text and "rank 1: (29, 4)" in text
    # a memory-mapped X on one rank would send it down another path (another set of
    # collectives): refused at the start rather than deadlocked
    for r in range(2):
        text = (launches[2] / f"mapped-on-rank-1.rank{r}.error").read_text()
        assert "every rank must be given the same X storage" in text
        assert "rank 0: 'in memory', rank 1: 'memory-mapped'" in text


# -- faults ------------------------------------------------------------------------------------
def test_an_exception_on_one_rank_ends_every_rank(tmp_path):
    stamp = tmp_path / "fault-time"
    case = {"name": "raise", "sizes": [4, 5, 3], "P": 400, "dtype": "float64",
            "fault": {"rank": 1, "epoch": 1, "stamp": str(stamp)},
            "fit": {"epochs": 1000, "batch_size": 4, "lr": 0.01}}
    proc = launch(2, [case], tmp_path, timeout=150)
    ended = time.time()
    assert proc.returncode != 0
    assert "planted failure on rank 1 in epoch 1" in proc.stderr  # the error is shown
    assert "rank 1 of 2 failed; aborting the MPI job" in proc.stderr
    assert not list(tmp_path.glob("raise.rank*.npz"))  # rank 0 did not go on training
    print(f"exception on rank 1: mpiexec status {proc.returncode}, "
          f"{ended - float(stamp.read_text()):.2f} s after the fault")
    assert ended - float(stamp.read_text()) < 30  # a liveness bound: the job did not hang


def test_a_killed_rank_ends_the_job_and_the_checkpoint_resumes(tmp_path):
    checkpoint = tmp_path / "run.npz"
    case = {"name": "killed", "sizes": [4, 5, 3], "P": 200, "dtype": "float64",
            "fault": {"rank": 1, "epoch": 2, "kill": True},
            "fit": {"epochs": 4, "batch_size": 8, "lr": 0.05, "optimizer": "adam",
                    "checkpoint": str(checkpoint)}}
    proc = launch(2, [case], tmp_path, timeout=150)
    print(f"SIGKILL of rank 1: mpiexec status {proc.returncode}")
    assert proc.returncode != 0
    assert not list(tmp_path.glob("killed.rank*.npz"))
    assert not list(tmp_path.glob(".gpubp-*"))  # no temporary left half-written
    # rank 0 waits for rank 1 before writing epoch 2's checkpoint: epoch 1's is the last
    state = ckpt_io.load(checkpoint)
    assert state.epoch == 1
    assert gpubp.load(checkpoint).sizes == [4, 5, 3]
    plain = {k: v for k, v in case.items() if k != "fault"}
    plain["fit"] = {k: v for k, v in case["fit"].items() if k != "checkpoint"}
    resumed = dict(plain, fit=dict(plain["fit"], resume=str(checkpoint)))
    assert_same_run(single(plain), single(resumed), 1e-12, "resumed after SIGKILL")


# -- CUDA under the simulator ------------------------------------------------------------------
def test_cuda_under_the_simulator_runs_the_distributed_path(tmp_path):
    case = {"name": "cudasim", "sizes": [4, 5, 3], "P": 26, "dtype": "float64",
            "device": "cuda", "fit": {"epochs": 2, "batch_size": 8, "lr": 0.1,
                                      "optimizer": "momentum"}}
    proc = launch(2, [case], tmp_path, timeout=300, env={"NUMBA_ENABLE_CUDASIM": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    on_cpu = single(dict(case, device="cpu"))
    for r in range(2):
        with np.load(tmp_path / f"cudasim.rank{r}.npz") as data:
            assert str(data["backend"]) == "cuda"
        got = read_result(tmp_path / f"cudasim.rank{r}.npz")
        assert_same_run(on_cpu, got, 1e-12, f"cuda simulator, rank {r}")


# -- data larger than memory -------------------------------------------------------------------
def test_memory_mapped_training_keeps_resident_memory_bounded(tmp_path):
    """256 MiB of float32 features, memory-mapped: each rank's peak RSS grows < 10% in fit."""
    n_rows, n_in = 131072, 512  # 2 KiB rows: 256 MiB
    features, labels = tmp_path / "X.npy", tmp_path / "y.npy"
    X = np.lib.format.open_memmap(features, mode="w+", dtype=np.float32, shape=(n_rows, n_in))
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, 8192):  # written in slices: this process stays small too
        X[start:start + 8192] = rng.random((min(8192, n_rows - start), n_in), np.float32)
    X.flush()
    del X
    np.save(labels, rng.integers(0, 10, n_rows).astype(np.int64))
    proc = launch(2, [{"memory_probe": [str(features), str(labels)]}], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in range(2):
        record = json.loads((tmp_path / f"memory.rank{r}.json").read_text())
        print(f"rank {r}: file {record['file_bytes'] / 2**20:.0f} MiB, peak RSS growth "
              f"{record['growth_fit'] / 2**20:.1f} MiB in fit, {record['growth'] / 2**20:.1f} "
              f"MiB with evaluate and predict")
        assert record["file_bytes"] == n_rows * n_in * 4
        assert np.isfinite(record["loss"]) and np.isfinite(record["eval_loss"])
        assert record["predicted"] == n_rows
        assert record["growth_fit"] < 0.10 * record["file_bytes"], record
        assert record["growth"] < 0.15 * record["file_bytes"], record


# -- the command line ----------------------------------------------------------------------------
def test_cli_trains_on_npy_files_over_mpi_like_one_process(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    y = (X[:, :3] @ rng.normal(size=(3, 3))).argmax(axis=1)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    common = ["-m", "gpubp", "train", "--features", "X.npy", "--labels", "y.npy",
              "--layers", "8", "--epochs", "3", "--batch-size", "32", "--verbose", "0",
              "--optimizer", "momentum", "--lr", "0.05"]
    environ = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1"}
    single_run = subprocess.run([sys.executable, *common, "--save", "one.npz"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, env=environ)
    assert single_run.returncode == 0, single_run.stderr
    ranks = subprocess.run([_mpiexec(), "-n", "2", sys.executable, *common, "--distributed",
                            "--save", "two.npz", "--checkpoint", "ck.npz", "--plot", "c.png"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=180,
                           env=environ)
    assert ranks.returncode == 0, ranks.stderr
    assert ranks.stdout.count("trained 3 epochs") == 1  # one rank prints
    assert ranks.stdout.count("saved to two.npz") == 1
    assert "data: X.npy, 300 train / 0 test examples, 6 features, 3 classes" in ranks.stdout
    one, two = gpubp.load(tmp_path / "one.npz"), gpubp.load(tmp_path / "two.npz")
    assert relative_difference(one.theta, two.theta) <= 1e-5
    assert ckpt_io.load(tmp_path / "ck.npz").epoch == 2
    assert (tmp_path / "c.png").stat().st_size > 0
    np.save(tmp_path / "y2.npy", np.stack([y, y], axis=1))
    bad = subprocess.run([_mpiexec(), "-n", "2", sys.executable, *common, "--labels", "y2.npy",
                          "--distributed"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=environ)
    assert bad.returncode != 0  # an error on the ranks ends the job instead of hanging it
    # the first rank to fail aborts the job: which one prints is a race
    assert re.search(r"error \(rank [01] of 2\): --labels must be integer labels of shape "
                     r"\(300,\)", bad.stderr), bad.stderr


WATCHDOG_SCRIPT = """
import os, socket, subprocess, sys, time
from gpubp.distributed.ranks import Watchdog

peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

class Comm:  # two ranks on this host: this process (rank 0) and the peer (rank 1)
    def Get_rank(self): return 0
    def Get_size(self): return 2
    def allgather(self, mine): return [mine, (socket.gethostname(), peer.pid)]

Watchdog(Comm(), interval=0.1)
time.sleep(0.5)
print("peer alive, still running", flush=True)
peer.kill()
peer.wait()  # reaped: the pid is gone, as under a launcher that reaps its ranks
time.sleep(30)
print("not ended", flush=True)
"""


def test_the_watchdog_ends_a_rank_whose_neighbour_was_killed():
    """A rank left waiting for a SIGKILLed one exits by itself (if mpiexec does not)."""
    proc = subprocess.run([sys.executable, "-c", WATCHDOG_SCRIPT], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert proc.returncode == 1
    assert "peer alive, still running" in proc.stdout and "not ended" not in proc.stdout
    assert "gpubp: rank 1 of 2 (pid" in proc.stderr and "has died; ending rank 0" in proc.stderr


def test_one_rank_is_the_single_process_path(tmp_path):
    """``distributed=True`` on one rank (no mpiexec) trains exactly as without it."""
    case = {"name": "alone", "sizes": [4, 5, 3], "P": 50, "dtype": "float64",
            "fit": {"epochs": 2, "batch_size": 8, "optimizer": "adam", "lr": 0.01}}
    (tmp_path / "case.json").write_text(json.dumps([case]))
    _mpiexec()  # mpi4py is needed (the test extra installs it)
    proc = subprocess.run([sys.executable, str(HERE / "distributed_worker.py"),
                           str(tmp_path / "case.json"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=str(HERE),
                          env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert proc.returncode == 0, proc.stderr
    params, history = single(case)
    got, got_history = read_result(tmp_path / "alone.rank0.npz")
    assert all(np.array_equal(a, b) for a, b in zip(params, got))  # bit for bit
    assert got_history == history
