"""Distributed training on every reduction path: the start-up broadcast and uneven shares.

Two planted bugs went unnoticed by tests/test_distributed.py (issue 24):

- rank 0's parameters not broadcast at the start: every case there but one has
  ``seed=0`` (all ranks start equal anyway) and the seedless one takes a path where the
  ranks of a machine share one copy of the parameters, which node rank 0 fills. Here
  every path runs a seedless case (each rank draws its own start; the run must equal one
  process started from rank 0's) and a case whose rank 1 (on 4 ranks: 1, 2 and 3) is
  given other parameters before ``fit`` (it must end with rank 0's run);
- a rank's share of an uneven batch losing rows: here every path trains batches of 7
  rows and a last one of 5 on 2, 3 and 4 ranks (no share is ever even) and must end
  with the single-process parameters.

The paths are chosen by :class:`gpubp.distributed.ranks.Group`'s ``reduction`` name
(``"shared"`` by default) and ``node``, by the optimizer (elementwise ones let a
machine's ranks share the parameters; the built-in SGD and Adam take the compiled step)
and by the backend (``reference``: the per-kernel step). Each path's name says how its
gradients must have been summed (checked from every rank). The CUDA paths (NCCL, one
GPU per rank) are not run here: they need a GPU per rank.

Each path is one ``mpiexec`` launch (its ranks with a timeout): a planted bug that makes
the ranks differ ends that launch alone (the end-of-fit check aborts the job).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from distributed_cases import SpreadSGD, make_data, make_network, read_result  # noqa: E402
from test_distributed import assert_same_run, launch, single  # noqa: E402

def _sum(name, shares=None, cross=False):
    return f"{name} shares_parameters={shares} cross={cross}"


# name -> (ranks, case settings, the reduction it must run, as RecordSum writes it)
PATHS = {
    "iallreduce": (2, {"group": {"reduction": "iallreduce"}, "optimizer": "momentum"},
                   _sum("iallreduce")),
    "allreduce": (2, {"group": {"reduction": "allreduce"}, "optimizer": "adam"},
                  _sum("allreduce")),
    "iallreduce-per-kernel": (2, {"group": {"reduction": "iallreduce"}, "spread_sgd": True},
                              _sum("iallreduce")),
    "reference-iallreduce": (2, {"group": {"reduction": "iallreduce"},
                                 "backend": "reference", "optimizer": "adam"},
                             _sum("iallreduce")),
    # shared memory asked for, but no two ranks on one "machine": messages
    "no-shared-node": (2, {"group": {"nodes_of": 1}, "optimizer": "adam"}, _sum("iallreduce")),
    "spread": (2, {"spread_sgd": True}, _sum("slice-sums", False)),
    "slice-sums": (2, {"group": {"reduction": "slice-sums"}, "optimizer": "momentum"},
                   _sum("slice-sums", True)),
    "reference-slice-sums": (2, {"backend": "reference", "optimizer": "adam"},
                             _sum("slice-sums", True)),
    "split-sgd": (2, {"optimizer": "sgd"}, _sum("shared", True)),
    "split-adam": (2, {"optimizer": "adam"}, _sum("shared", True)),
    # 4 ranks as 2 machines of 2: shared memory within, allreduce between
    "nodes-shared": (4, {"group": {"nodes_of": 2}, "optimizer": "adam"},
                     _sum("slice-sums", True, True)),
    "nodes-spread": (4, {"group": {"nodes_of": 2}, "spread_sgd": True},
                     _sum("slice-sums", False, True)),
}
# On "slice-sums", "reference-slice-sums", "split-sgd" and "split-adam" one machine shares
# one copy of the parameters, which node rank 0 fills: a missing broadcast is hidden there
# (their start tests pass with it), not on the other paths.

P, BATCH = 47, 7  # 6 batches of 7 and one of 5: uneven shares on 2, 3 and 4 ranks


def _case(path, kind):
    n, settings, _ = PATHS[path]
    settings = dict(settings)
    optimizer = settings.pop("optimizer", None)
    fit = {"epochs": 2, "batch_size": BATCH, "lr": 0.05}
    if optimizer is not None:
        fit["optimizer"] = optimizer
    case = {"name": f"{path}-{kind}", "sizes": [5, 7, 6, 3], "P": P, "dtype": "float64",
            "data_seed": 2, "fit": fit, **settings}
    if kind == "seedless":  # each rank draws its own start and its own validation split
        case.update(seed=None)
        case["fit"]["validation_split"] = 0.25
    elif kind == "perturbed":
        case["perturb_ranks"] = list(range(1, n))
    return case


def _launched(n, cases, out):
    """Run ``cases`` on ``n`` ranks; returns ``out`` once every rank has ended well."""
    proc = launch(n, cases, out, timeout=240, worker="distributed_start_worker.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """``launches(path)``: the directory of that path's launch (made on first use, once:
    a failed launch fails each of the path's tests without running again)."""
    root = tmp_path_factory.mktemp("planted")
    done = {}

    def get(path):
        if path not in done:
            n = PATHS[path][0]
            cases = [_case(path, kind) for kind in ("perturbed", "seedless", "uneven")]
            try:
                done[path] = _launched(n, cases, root / path)
            except AssertionError as exc:
                done[path] = exc
        if isinstance(done[path], AssertionError):
            raise done[path]
        return done[path]
    return get


@pytest.fixture(scope="module")
def on_three_ranks(tmp_path_factory):
    """The uneven case of every one-machine path on 3 ranks, in one launch."""
    out = tmp_path_factory.mktemp("planted-3")
    cases = [_case(path, "uneven") for path, (n, _, _) in PATHS.items() if n == 2]
    return _launched(3, cases, out)


def _start(out, name, r):
    with np.load(out / f"{name}.rank{r}.start.npz") as data:
        params = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
        state = json.loads(data["rng"].tobytes().decode())
    return params, state


def _from_start(case, params, state):
    """The case in one process, its network started from ``params`` and generator ``state``."""
    X, y = make_data(case)
    net = make_network(case)
    L = len(params) // 2
    net.set_params(params[:L], params[L:])
    net.rng.bit_generator.state = state
    kwargs = dict(case["fit"])
    if case.get("spread_sgd"):
        kwargs["optimizer"] = SpreadSGD(lr=kwargs.pop("lr"), momentum=0.5)
    history = net.fit(X, y, verbose=0, **kwargs)
    W, b = net.get_params()
    return W + b, history.to_dict()


def _check_ranks(out, case, n, expected, label):
    for r in range(n):
        got = read_result(out / f"{case['name']}.rank{r}.npz")
        assert_same_run(expected, got, 1e-12, f"{label}: rank {r} of {n}")
        assert (out / f"{case['name']}.rank{r}.sum").read_text() == PATHS[label][2], label


@pytest.mark.parametrize("path", PATHS)
def test_a_seedless_run_is_the_run_from_rank_0s_start(launches, path):
    """seed=None: every rank draws its own parameters and generator; the run equals one
    process started from rank 0's (its validation split, shuffles and parameters)."""
    out, n, case = launches(path), PATHS[path][0], _case(path, "seedless")
    starts = [_start(out, case["name"], r) for r in range(n)]
    # the case tests something: the ranks did start apart
    assert not np.array_equal(starts[0][0][0], starts[1][0][0])
    assert starts[0][1] != starts[1][1]
    expected = _from_start(case, *starts[0])
    _check_ranks(out, case, n, expected, path)


@pytest.mark.parametrize("path", PATHS)
def test_ranks_given_other_parameters_end_with_rank_0s_run(launches, path):
    """Rank 1 (and on 4 ranks 2 and 3) given other parameters before fit: every rank
    ends as the single-process run of rank 0's network."""
    out, n, case = launches(path), PATHS[path][0], _case(path, "perturbed")
    starts = [_start(out, case["name"], r)[0] for r in range(n)]
    assert all(not np.array_equal(starts[0][0], s[0]) for s in starts[1:])
    _check_ranks(out, case, n, single(case), path)


@pytest.mark.parametrize("path", PATHS)
def test_uneven_shares_end_with_the_single_process_parameters(launches, on_three_ranks, path):
    """Batches of 7 rows and a last one of 5: no rank count here divides them; every
    rank ends with the single-process parameters and History."""
    n, case = PATHS[path][0], _case(path, "uneven")
    expected = single(case)
    for ranks, out in [(n, launches(path))] + ([(3, on_three_ranks)] if n == 2 else []):
        assert BATCH % ranks and (P % BATCH) % ranks  # uneven shares, the last batch too
        _check_ranks(out, case, ranks, expected, path)
