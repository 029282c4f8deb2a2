"""Throughput of the gpubp backends against JAX and PyTorch doing the same training.

This module is what ``gpubp bench`` prints; the pytest-benchmark suites in
``benchmarks/`` time the same runners. What each runner does, and why gpubp's is
:meth:`gpubp.Network.fit` itself, is in :mod:`gpubp.bench.runners`.

Fairness on a small machine: every runner runs in **its own process** (a :class:`Worker`),
so that the BLAS or XLA threads one framework leaves spinning never slow the next one
down, and the runners take turns: every round times one epoch of each, in an order rotated
from round to round, so a burst of load from elsewhere lands on all of them. Each is
reported at its **best epoch** (interference only ever adds time) and each peer at its
best configuration (JAX with its batches preloaded, with and without buffer donation).
Compare ratios within one run: absolute numbers drift between runs on a shared machine.
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from gpubp.backends.devices import resolve_device
from gpubp.bench.runners import (  # noqa: F401 - the benchmark vocabulary, re-exported
    BACKEND_RUNNERS,
    CASES,
    CUDA_VARIANTS,
    LR,
    PEERS,
    SAMPLES_PER_EPOCH,
    Case,
    Unavailable,
    gemm_step,
    init_params,
    make_batches,
    make_network,
    make_runner,
    parse_case,
    time_epochs,
)
from tqdm.auto import tqdm

_PEER_MODULES = {name: "jax" if name.startswith("jax") else "torch" for name in PEERS}
# seconds between one worker's work and the next's: OpenBLAS's idle threads spin for about
# 2^28 cycles (OPENBLAS_THREAD_TIMEOUT's default, ~0.08 s here) before they sleep
SETTLE = 0.25


class Worker:
    """One runner in its own Python process, timing one epoch per :meth:`epoch` call.

    Parameters
    ----------
    runner : str
        A runner name of :func:`gpubp.bench.runners.make_runner`.
    case : Case
    n_batches : int
    train : bool

    Raises
    ------
    Unavailable
        When the runner cannot run here (checked before starting a process for peers
        that are not installed).
    """

    def __init__(self, runner, case, n_batches, train=True):
        self.runner = runner
        self.parts = None  # what the last epoch reported of its parts (bound: a dict)
        module = _PEER_MODULES.get(runner)
        if module is not None and importlib.util.find_spec(module) is None:
            raise Unavailable(f"{module} is not installed")
        if "cuda" in runner and resolve_device("auto") != "cuda":
            raise Unavailable("no usable CUDA GPU")
        import gpubp  # the version, in the worker's own process

        root = os.path.dirname(os.path.dirname(os.path.abspath(gpubp.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gpubp.bench.runners"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        spec = {"runner": runner, "case": case.name, "n_batches": n_batches, "train": train}
        time.sleep(SETTLE)  # the warm-up epoch (fit's thread probe) runs in a quiet machine
        try:
            reply = self._ask(json.dumps(spec))
        except BaseException:
            self.close()
            raise
        if "unavailable" in reply:
            self.close()
            raise Unavailable(reply["unavailable"])

    def _ask(self, line):
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            self._proc.wait()
            self._stderr.seek(0)
            lines = [line for line in self._stderr.read().splitlines() if line.strip()]
            last = lines[-1].strip() if lines else "no output"  # the exception, not its trace
            raise RuntimeError(f"benchmark worker {self.runner!r} exited with status "
                               f"{self._proc.returncode}: {last}")
        return json.loads(answer)

    def epoch(self):
        """Run one epoch in the worker; its seconds, as the worker timed them.

        Waits :data:`SETTLE` seconds first: the runner that ran before, in another
        process, leaves its BLAS (or XLA, OpenMP) threads spinning for a while, and on a
        2-core machine they take a core from this epoch's threads.
        """
        time.sleep(SETTLE)
        reply = self._ask("epoch")
        self.parts = reply.get("parts")  # the bound runner's (gpubp.bench.bound)
        return reply["seconds"]

    def close(self):
        """Stop the process (politely, then by force) and release its pipes."""
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.flush()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def default_backends():
    """The gpubp backends that can run here: reference and cpu, plus cuda with a GPU."""
    return ("reference", "cpu") + (CUDA_VARIANTS if resolve_device("auto") == "cuda" else ())


# rough costs for the duration stated before a run: starting a worker (Python, NumPy,
# Numba's compilation, the warm-up epoch) and the speed of the slowest runner, reference
START_SECONDS = 3.0
REFERENCE_GFLOPS = 2.0


def _runners(backends, peers, train):
    gemms = ("gemm-only", "bound") + (("gemm-only-cuda",) if any("cuda" in b for b in backends)
                                      else ())
    # peers: True (all of PEERS), False, or the names of some
    chosen = PEERS if peers is True else tuple(peers or ())
    return backends + (gemms if train else ()) + chosen


def expected_seconds(cases, backends, peers, repeats, train, samples_per_epoch, processes):
    """A rough duration of :func:`measure`: worker starts plus timed epochs, each epoch at
    the reference runner's speed (the others are faster: an upper estimate for them).
    Peers that are not installed cost nothing and are not counted."""
    runners = [r for r in _runners(tuple(backends), peers, train)
               if r not in _PEER_MODULES or importlib.util.find_spec(_PEER_MODULES[r])]
    total = 0.0
    for case in cases:
        n_batches = max(1, samples_per_epoch // case.batch_size)
        epoch = case.flops(train) * n_batches / (REFERENCE_GFLOPS * 1e9) + SETTLE
        total += processes * len(runners) * (START_SECONDS + SETTLE + (repeats + 1) * epoch)
    return total


def _progress(total, desc, file):
    return tqdm(total=total, desc=desc, unit="step", file=file, leave=False,
                disable=file is None)


def measure(cases=None, backends=None, peers=True, repeats=5, train=True,
            samples_per_epoch=SAMPLES_PER_EPOCH, processes=3, progress=None):
    """Best epoch times of every runner on every case, each runner in its own process.

    Every runner is started (and warmed up) in its own :class:`Worker`; then ``repeats``
    rounds each time one epoch of every runner, the order rotated by one from round to
    round. Only one worker runs at a time. All that is done ``processes`` times, with
    fresh processes: a process's speed on two BLAS threads can be bimodal and fixed for
    its life (docs/performance.md, "Bimodal BLAS processes"), so one process per runner
    could hand any runner the slow mode and decide a ratio by chance.

    Returns
    -------
    list of dict
        One row per (case, runner) with keys ``case``, ``runner``, ``seconds`` (the best
        epoch, None when unavailable), ``median_seconds``, ``samples_per_s`` and
        ``gflops`` (of the best epoch), ``speedup`` (over ``reference``), ``vs_jax``
        (the best JAX variant's time / this runner's), ``gemm_fraction`` (GEMM-only time /
        runner time, against the bound of the runner's device; None where the GEMM-only
        epoch was the slower: then it timed per-call overhead, and bounds nothing),
        ``bound_seconds`` and ``bound_parts`` (the ``bound`` runner's best epoch and its
        parts, :mod:`gpubp.bench.bound`), ``bound_fraction`` (bound time / runner time,
        the CPU runners' ``% of bound``) and ``note`` (why a runner was skipped).

    ``progress``, a file (stderr), gets a progress bar per case: one step per worker
    started and per epoch timed, the current runner named.
    """
    cases = [parse_case(c) if isinstance(c, str) else c for c in (cases or CASES)]
    backends = tuple(backends or default_backends())
    runners = _runners(backends, peers, train)
    rows = []
    for case in cases:
        n_batches = max(1, samples_per_epoch // case.batch_size)
        samples = n_batches * case.batch_size
        notes, times, parts = {}, {}, {}
        with _progress(processes * len(runners) * (1 + repeats), case.name, progress) as bar:
            for p in range(processes):
                todo = [n for n in runners if n not in notes]
                bar.total -= (len(runners) - len(todo)) * (1 + repeats)  # skipped: no steps
                _rounds(case, n_batches, train, todo, repeats, (notes, times, parts),
                        (bar, f"process {p + 1}/{processes}"))
        best = {name: min(ts) for name, ts in times.items() if ts}
        jax = min((best[n] for n in best if n.startswith("jax")), default=None)
        peer = min((best[n] for n in best if n in PEERS), default=None)
        bound = best.get("bound")  # and the parts of its best epoch, which sum to it
        bound_parts = parts["bound"][times["bound"].index(bound)] if bound else None
        for name in runners:
            sec = best.get(name)
            gemm = best.get("gemm-only-cuda" if "cuda" in name else "gemm-only")
            rows.append({
                "case": case.name, "runner": name, "seconds": sec,
                "median_seconds": statistics.median(times[name]) if sec else None,
                "note": notes.get(name, ""),
                "samples_per_s": samples / sec if sec else None,
                "gflops": case.flops(train) * n_batches / sec / 1e9 if sec else None,
                "speedup": best["reference"] / sec if sec and "reference" in best else None,
                "vs_jax": jax / sec if sec and jax else None,
                "vs_peer": peer / sec if sec and peer else None,
                # a "bound" slower than the runner it bounds timed overhead, not GEMMs
                "gemm_fraction": (gemm / sec if sec and gemm and gemm <= sec
                                  and name not in ("gemm-only", "gemm-only-cuda", "bound")
                                  else None),
                "bound_seconds": bound, "bound_parts": bound_parts,
                "bound_fraction": (bound / sec if sec and bound and "cuda" not in name
                                   and name not in ("bound", "gemm-only") else None),
            })
    return rows


def _rounds(case, n_batches, train, runners, repeats, found, progress=(None, "")):
    """One process per runner, ``repeats`` rotated rounds; ``found`` is ``(notes, times,
    parts)``: the reason a runner cannot run goes to ``notes``, its epoch times to
    ``times``, what each epoch reported of its parts (None, but for ``bound``) to ``parts``;
    ``progress`` is ``(bar, where)``, a tqdm bar (or None) and the label of its steps."""
    notes, times, parts = found
    bar, where = progress
    def step(name, what, n=1):
        if bar is not None:
            bar.set_postfix_str(f"{where}: {what} {name}", refresh=False)
            bar.update(n)

    workers = {}
    try:
        for name in runners:
            try:
                workers[name] = Worker(name, case, n_batches, train)
                step(name, "started")
            except Unavailable as exc:
                notes[name] = str(exc)
                if bar is not None:
                    bar.total -= 1 + repeats
        names = list(workers)
        for r in range(repeats if names else 0):
            k = r % len(names)
            for name in names[k:] + names[:k]:  # rotated: no runner always goes first
                times.setdefault(name, []).append(workers[name].epoch())
                parts.setdefault(name, []).append(workers[name].parts)
                step(name, f"round {r + 1}/{repeats}")
    finally:
        for worker in workers.values():
            worker.close()


def format_table(rows, title=""):
    """The rows of :func:`measure` as a fixed-width text table."""
    w = max([22] + [len(r["case"]) for r in rows])  # case names with their training are long
    head = f"{'case':<{w}} {'runner':<16} {'samples/s':>11} {'GFLOP/s':>8} " \
           f"{'x ref':>7} {'x JAX':>6} {'x peer':>6} {'% GEMM bound':>12} {'% of bound':>10}"
    lines = [title, head, "-" * len(head)] if title else [head, "-" * len(head)]
    for r in rows:
        if r["seconds"] is None:
            lines.append(f"{r['case']:<{w}} {r['runner']:<16} {'skipped: ' + r['note']}")
            continue
        speed = f"{r['speedup']:.2f}" if r["speedup"] else "-"
        vs_jax = f"{r['vs_jax']:.2f}" if r["vs_jax"] else "-"
        vs_peer = f"{r['vs_peer']:.2f}" if r.get("vs_peer") else "-"
        frac = f"{100 * r['gemm_fraction']:.0f}%" if r["gemm_fraction"] else "-"
        of_bound = f"{100 * r['bound_fraction']:.0f}%" if r.get("bound_fraction") else "-"
        lines.append(f"{r['case']:<{w}} {r['runner']:<16} {r['samples_per_s']:>11,.0f} "
                     f"{r['gflops']:>8.1f} {speed:>7} {vs_jax:>6} {vs_peer:>6} {frac:>12} "
                     f"{of_bound:>10}")
    return "\n".join(lines)


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def run_bench(cases=None, backends=None, peers=True, repeats=5, file=sys.stdout,
              inference=False, samples_per_epoch=SAMPLES_PER_EPOCH, processes=3,
              progress=sys.stderr):
    """Print the comparison table: samples/s per backend and peer, speed-ups, GEMM bound.

    Parameters
    ----------
    cases : sequence of Case or str, optional
        Default :data:`CASES` (``"784-128-10@64"`` style strings are accepted).
    backends : sequence of str, optional
        gpubp backends to time; default those usable here (``cuda`` only with a GPU).
    peers : bool or sequence of str
        Also time the peers where installed (True: every name of ``PEERS``: JAX's
        whole-epoch scan and jitted step, PyTorch eager and compiled), or those named.
    repeats : int
        Rounds: timed epochs per runner (the best is reported), after one warm-up epoch.
    file : file-like
        Where the table goes.
    inference : bool
        Also print a forward-only table.
    samples_per_epoch : int
        Rows per timed epoch (rounded down to whole batches, at least one batch).
    processes : int
        Fresh processes per runner, one after another (see :func:`measure`).
    progress : file or None
        Where the progress bars go (default stderr; None: none). The expected duration
        is printed to ``file`` first.

    Returns
    -------
    list of dict
        The training rows of :func:`measure` (plus the inference rows when asked).
    """
    cases = [parse_case(c) if isinstance(c, str) else c for c in (cases or CASES)]
    backends = tuple(backends or default_backends())
    unknown = [b for b in backends if b not in BACKEND_RUNNERS]
    if unknown:
        raise ValueError(f"backends must be among {', '.join(BACKEND_RUNNERS)}, got "
                         f"{unknown[0]!r}")
    if peers not in (True, False) and any(p not in PEERS for p in peers):
        raise ValueError(f"peers must be among {', '.join(PEERS)}, got "
                         f"{next(p for p in peers if p not in PEERS)!r}")
    seconds = sum(expected_seconds(cases, backends, peers, repeats, train, samples_per_epoch,
                                   processes) for train in ((True, False) if inference else (True,)))
    print(f"{len(cases)} case(s) x {processes} process(es) per runner x {repeats} rounds: "
          f"expect roughly {_duration(seconds)} (worker starts ~{START_SECONDS:.0f} s each; "
          f"progress on stderr)", file=file, flush=True)
    rows = measure(cases, backends, peers, repeats, True, samples_per_epoch, processes,
                   progress=progress)
    print(format_table(rows, f"Training (SGD, fit), best of {processes} x {repeats} rounds "
                             f"of ~{samples_per_epoch} samples, each runner in {processes} "
                             f"processes of its own, one after another"), file=file)
    if inference:
        inf = measure(cases, backends, peers, repeats, False, samples_per_epoch, processes,
                      progress=progress)
        print("\n" + format_table(inf, "Inference (forward only)"), file=file)
        rows = rows + inf
    return rows
