"""The hardware check of the CUDA path: one command, about 8 minutes on an H200.

Run from the repository root, with only what a GPU machine has (CuPy, numba-cuda,
pytest; torch and jax optional; nothing is installed)::

    PYTHONPATH=. python benchmarks/gpu_check.py OUTDIR [--budget SECONDS] [--quick]

It writes ``OUTDIR/gpu_check.json`` and ``OUTDIR/gpu_check.md`` (the table for
docs/cuda.md): the environment and the probe's answer; the ``gpu``-marked tests; every
CUDA kernel against its NumPy twin on device arrays (both dtypes, odd shapes, a
non-default stream); the host CPU µs per ``fit`` step (eager, CUDA graph, TF32); and
``fit``'s ms per step of gpubp cuda (eager, CUDA graph, TF32), gpubp cpu, PyTorch CUDA (eager and a CUDA-graph step) and JAX on the
GPU, each in its own process, for 784-128-10 @ 64 and 784-1024-1024-10 @ 256. Each part
runs under a timeout within ``--budget`` (default 450 s): a part that fails or runs out
of time is recorded and the rest go on. Without a usable GPU it says why, runs the CPU
parts (gpubp cpu on the small case) and still writes both files. ``--quick`` runs fewer
steps (a smoke test of the script itself).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = Path(__file__).resolve().with_name("gpu_check_runners.py")
CASES = {"784-128-10@64": 300, "784-1024-1024-10@256": 100}  # case -> steps timed
# gpubp-cuda: eager steps (cuda_graph=False); -graph: cuda_graph=True; -tf32: TF32 GEMMs
# with the default cuda_graph="auto"
GPU_RUNNERS = ("gpubp-cuda", "gpubp-cuda-graph", "gpubp-cuda-tf32", "torch-eager",
               "torch-graph", "jax-gpu")
NOT_IMPLEMENTED = {}


class Budget:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self, cap):
        return max(1.0, min(cap, self.end - time.monotonic()))


def _run(args, timeout, env=None):
    """``(result or None, note)`` of one runner process (its last stdout line is JSON)."""
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    try:
        proc = subprocess.run([sys.executable, str(RUNNERS), *map(str, args)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    seconds = round(time.monotonic() - t0, 1)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return None, f"exit {proc.returncode} after {seconds} s: {proc.stderr.strip()[-1500:]}"
    try:
        return json.loads(lines[-1]), f"{seconds} s"
    except json.JSONDecodeError:
        return None, f"no JSON result: {proc.stdout[-500:]}"


def _gpu_tests(budget):
    """The gpu-marked tests; library warnings are reported, not turned into failures."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-W", "default",
           "-p", "no:cacheprovider", "tests/test_cuda_backend.py", "tests/test_cuda_kernels.py"]
    timeout = budget.left(150)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "summary": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    return {"ok": proc.returncode == 0, "summary": lines[-1] if lines else proc.stderr[-500:],
            "tail": proc.stdout[-3000:] if proc.returncode else ""}


def check(out_dir, budget_s=450, quick=False):
    """Run every part; returns the report (also written to ``out_dir``)."""
    budget = Budget(budget_s)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "budget_s": budget_s,
              "notes": dict(NOT_IMPLEMENTED)}
    report["env"], note = _run(["env"], budget.left(90))
    env = report["env"] or {}
    gpu = bool(env.get("cuda_usable")) and not env.get("NUMBA_ENABLE_CUDASIM")
    if not gpu:
        why = env.get("probe", note)
        report["notes"]["gpu"] = f"no usable GPU ({why}): only the CPU parts ran"
        print(f"gpu_check: no usable GPU ({why}); running the CPU parts only", file=sys.stderr)
    steps = {case: (20 if quick else n) for case, n in CASES.items()}
    if gpu:
        report["gpu_tests"] = _gpu_tests(budget)
        report["kernels"], report["notes"]["kernels"] = _run(["kernels"], budget.left(150))
        report["host"] = {}
        for case in CASES:
            result, report["notes"][f"host {case}"] = _run(["host", case, steps[case]],
                                                           budget.left(60))
            report["host"][case] = result and result["host_us_per_step"]
            report.setdefault("host_profile", {})[case] = result and result.get("profile")
    report["fit"] = {}
    runners = (*GPU_RUNNERS, "gpubp-cpu") if gpu else ("gpubp-cpu",)
    for case in CASES if gpu else list(CASES)[:1]:
        for runner in runners:
            n = steps[case] if runner != "gpubp-cpu" else min(steps[case], 30)
            result, note = _run(["fit", runner, case, n], budget.left(60))
            report["fit"].setdefault(case, {})[runner] = result and result["ms_per_step"]
            report["notes"][f"fit {runner} {case}"] = note
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "gpu_check.md").write_text(markdown(report))
    return report


def _ms(value):
    return "–" if value is None else f"{value:.3f}"


def markdown(report):
    """The report as markdown: environment, checks, and the ms/step table."""
    env = report.get("env") or {}
    lines = ["# gpu_check", "", f"{report['started']}; device: {env.get('device', 'none')} "
             f"(cc {env.get('cc', '?')}), probe: {env.get('probe', '?')}", ""]
    packages = env.get("packages", {})
    lines += ["Packages: " + ", ".join(f"{k} {v}" for k, v in packages.items()), ""]
    if "gpu_tests" in report:
        lines += [f"gpu-marked tests: {report['gpu_tests']['summary']}", ""]
    kernels = report.get("kernels")
    if kernels is not None:
        lines += [f"kernels vs NumPy twins: {kernels['checked']} checked, "
                  f"{len(kernels['failed'])} failed, {len(kernels['errors'])} errors", ""]
        lines += [f"float32 GEMM error vs float64, by precision: {kernels.get('gemm_error')}",
                  ""]
        lines += [f"- FAILED {k}" for k in kernels["failed"]] + \
                 [f"- ERROR {e}" for e in kernels["errors"]]
    for case, us in (report.get("host") or {}).items():
        lines += [f"host CPU µs per fit step, {case}: {us}", ""]
    fit = report.get("fit", {})
    runners = sorted({r for rows in fit.values() for r in rows})
    if runners:
        lines += ["| ms / step | " + " | ".join(runners) + " |",
                  "|---|" + "---|" * len(runners)]
        lines += [f"| {case} | " + " | ".join(_ms(rows.get(r)) for r in runners) + " |"
                  for case, rows in fit.items()]
        lines += [""]
    lines += [f"- {k}: {v}" for k, v in report["notes"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where gpu_check.json and gpu_check.md are written")
    parser.add_argument("--budget", type=float, default=450, help="seconds for all parts")
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke test)")
    args = parser.parse_args(argv)
    report = check(args.out_dir, args.budget, args.quick)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
