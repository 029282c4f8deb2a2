"""``benchmarks/gpu_check.py`` without a GPU: it says so, runs its CPU parts, writes both files."""

import importlib.util
import json
from pathlib import Path

# loaded by path: "benchmarks" is no package of gpubp's (another distribution may own the name)
_SPEC = importlib.util.spec_from_file_location(
    "gpu_check", Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_check)


def test_without_a_gpu_only_the_cpu_parts_run(tmp_path, monkeypatch):
    ran = []

    def fake_run(args, timeout, env=None):
        ran.append(args[:2])
        if args[0] == "env":
            return {"cuda_usable": False, "probe": "CuPy is not installed", "packages": {}}, "1 s"
        return {"ms_per_step": 1.5}, "2 s"

    monkeypatch.setattr(gpu_check, "_run", fake_run)
    report = gpu_check.check(tmp_path, budget_s=60, quick=True)
    assert ran == [["env"], ["fit", "gpubp-cpu"]]
    assert report["notes"]["gpu"] == "no usable GPU (CuPy is not installed): only the CPU " \
                                     "parts ran"
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["fit"] == {"784-128-10@64": {"gpubp-cpu": 1.5}}
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| 784-128-10@64 | 1.500 |" in table and "no usable GPU" in table


def test_with_a_gpu_every_part_and_runner_is_asked_for(tmp_path, monkeypatch):
    ran = []

    def fake_run(args, timeout, env=None):
        ran.append(tuple(args[:3]))
        if args[0] == "env":
            return {"cuda_usable": True, "probe": "H200", "device": "H200", "cc": "9.0"}, ""
        if args[0] == "kernels":
            return {"checked": 3, "failed": [], "errors": [], "ok": True}, ""
        if args[0] == "host":
            return {"host_us_per_step": {"eager": 50.0}}, ""
        return None, "timed out after 60 s"  # a failing part is recorded, the rest go on

    monkeypatch.setattr(gpu_check, "_run", fake_run)
    monkeypatch.setattr(gpu_check, "_gpu_tests", lambda budget: {"ok": True,
                                                                  "summary": "9 passed"})
    report = gpu_check.check(tmp_path, budget_s=60)
    fits = {args[1:] for args in ran if args[0] == "fit"}
    assert fits == {(r, c) for r in (*gpu_check.GPU_RUNNERS, "gpubp-cpu")
                    for c in gpu_check.CASES}
    assert report["notes"]["fit torch-graph 784-1024-1024-10@256"] == "timed out after 60 s"
    table = (tmp_path / "gpu_check.md").read_text()
    assert "gpu-marked tests: 9 passed" in table and "3 checked, 0 failed" in table


def test_a_runner_process_really_runs_on_the_cpu():
    result, note = gpu_check._run(["fit", "gpubp-cpu", "20-8-3@16", 4], timeout=300)
    assert result is not None, note
    assert result["runner"] == "gpubp-cpu" and result["ms_per_step"] > 0


def test_the_kernel_check_itself_under_the_simulator():
    import os
    import re
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/cudasim_gpu_check.py"], cwd=Path(__file__).resolve().parent.parent,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0 and re.search(r"2 passed", proc.stdout), tail


def test_the_host_profile_names_where_a_step_goes():
    spec = importlib.util.spec_from_file_location(
        "gpu_check_runners", Path(gpu_check.RUNNERS))
    runners = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runners)
    net = runners._gpubp_net((20, 8, 3), "cpu", backend="reference")
    X, Y = runners._data((20, 8, 3), 64)
    rows = runners._profile(net, X, Y, 16, 4, top=5)
    assert len(rows) == 5 and all(" us " in row and "calls" in row for row in rows)
