"""Throughput comparison of the backends and of JAX / PyTorch doing the same training.

This module is what ``gpubp bench`` prints and what the pytest-benchmark suites in
``benchmarks/`` time. Every *runner* does the same work on the same data: SGD on an MLP
(sigmoid hidden layers, softmax + cross-entropy, float32) over a fixed list of batches,
or forward-only inference over them. Runners:

- ``reference``, ``cpu``, ``cuda`` (``cuda-fused``, ``cuda-cublas``: its ``weight_grad``
  variants): :class:`gpubp.Network` on that backend, one ``_train_step`` per batch (the
  body of ``fit``'s loop), or ``forward`` for inference;
- ``gemm-only`` (``gemm-only-cuda`` on a GPU): the same step's matrix products alone, on
  the fastest backend of the device, into the same buffers. Its time is the bound the
  fused kernels are measured against (``% of GEMM bound`` = GEMM-only time / runner time);
- peers ``jax-jit`` (``jax.jit`` of the whole step, buffers donated) and ``torch-eager``
  (autograd + ``torch.optim.SGD``), skipped with the reason when not installed.

Timing: one untimed warm-up epoch (JIT compilation is not throughput), then ``repeats``
timed rounds, each timing one epoch of every runner in turn, and the median per runner.
Each timed epoch ends by synchronising its device, so a GPU is timed on finished work,
not on queued launches. Compare ratios within one run: on a
small noisy machine absolute numbers drift between runs.
"""

import itertools
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from gpubp.backends.base import resolve_device


@dataclass(frozen=True)
class Case:
    """One benchmark problem: layer sizes and batch size (``784-128-10@64``)."""

    sizes: tuple
    batch_size: int

    @property
    def name(self):
        return "-".join(map(str, self.sizes)) + f"@{self.batch_size}"

    def flops(self, train=True):
        """FLOPs of one step: ``6·P·Σ n_{l-1} n_l`` for training, a third for inference.

        Forward is one GEMM per layer (2·P·n_{l-1}·n_l); the backward pass adds two (the
        weight gradient and the propagated delta), counted for every layer for simplicity.
        """
        mult = 6 if train else 2
        return mult * self.batch_size * sum(a * b for a, b in zip(self.sizes, self.sizes[1:]))


CASES = (
    Case((784, 128, 10), 64),
    Case((784, 512, 512, 10), 128),
    Case((784, 1024, 1024, 10), 256),
)

SAMPLES_PER_EPOCH = 4096
LR = 0.05


def parse_case(text):
    """``"784-128-10@64"`` -> :class:`Case`."""
    try:
        sizes, batch = text.split("@")
        return Case(tuple(int(s) for s in sizes.split("-")), int(batch))
    except ValueError:
        raise ValueError(f"case must look like '784-128-10@64', got {text!r}") from None


def make_batches(case, n_batches, dtype="float32", seed=0):
    """Inputs in [0, 1) and one-hot targets, ``n_batches`` pairs of shapes (P, n_0), (P, n_L)."""
    rng = np.random.default_rng(seed)
    P, n_in, n_out = case.batch_size, case.sizes[0], case.sizes[-1]
    batches = []
    for _ in range(n_batches):
        x = rng.random((P, n_in), dtype=np.float64).astype(dtype)
        y = np.zeros((P, n_out), dtype=dtype)
        y[np.arange(P), rng.integers(0, n_out, P)] = 1
        batches.append((x, y))
    return batches


def init_params(sizes, dtype="float32", seed=0):
    """Weights ``N(0, 1/n_{l-1})`` and zero biases, identical for every runner."""
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((m, n)) / np.sqrt(m)).astype(dtype)
               for m, n in itertools.pairwise(sizes)]
    biases = [np.zeros(n, dtype=dtype) for n in sizes[1:]]
    return weights, biases


def make_network(backend, case, dtype="float32", seed=0, **backend_options):
    """A :class:`gpubp.Network` of the benchmark's architecture with :func:`init_params`.

    ``backend`` is a gpubp backend name; its device follows from it (``cuda`` runs on the
    GPU, the others on the CPU).
    """
    from gpubp.network import Network

    device = "cuda" if backend == "cuda" else "cpu"
    net = Network(list(case.sizes), hidden="sigmoid", output="softmax", loss="cross_entropy",
                  device=device, dtype=dtype, seed=seed, backend=backend, fallback=False,
                  **backend_options)
    net.set_params(*init_params(case.sizes, dtype, seed))
    return net


def gemm_step(net, P):
    """The matrix products of one training step of ``net`` alone, into its own buffers.

    The same products, shapes and transpositions as ``Network._forward`` and
    ``Network._backward`` on the first ``P`` rows of the loaded batch; nothing else.
    """
    be, a, delta, L = net.backend, net.activations, net.deltas, net.L
    for l in range(1, L + 1):
        be.matmul(a[l - 1][:P], net.W[l - 1], out=a[l][:P])
    for l in range(L, 0, -1):
        be.matmul(a[l - 1][:P].T, delta[l][:P], out=net.nabla_w[l - 1])
        if l > 1:
            be.matmul(delta[l][:P], net.W[l - 1].T, out=delta[l - 1][:P])


# -- runners: each returns a zero-argument callable doing one synchronised epoch ----------
class Unavailable(Exception):
    """A runner that cannot run here; the message says why."""


def _backend_runner(name, case, batches, train):
    """Runners ``reference``, ``cpu``, ``cuda[-<weight_grad>]`` and ``gemm-only[-cuda]``."""
    from gpubp.optimizers import SGD

    if name.startswith("gemm-only"):
        backend, options = ("cuda" if name.endswith("cuda") else "cpu"), {}
    else:
        backend, _, variant = name.partition("-")
        options = {"weight_grad": variant} if variant else {}
    if backend == "cuda" and resolve_device("auto") != "cuda":
        raise Unavailable("no usable CUDA GPU")
    try:
        net = make_network(backend, case, **options)
    except (TypeError, ValueError) as exc:
        raise Unavailable(f"{name}: {exc}") from None
    sync = net.backend.synchronize
    optimizer = SGD(lr=LR)
    if name.startswith("gemm-only"):
        x, y = batches[0]
        net._train_step(optimizer, x, y)  # realistic values in every buffer, then GEMMs only
        P = x.shape[0]

        def epoch():
            for _ in batches:
                gemm_step(net, P)
            sync()
    elif train:
        # Network._train_step is the body of fit's loop without its per-epoch bookkeeping
        # (parameter snapshot, accuracy pass), which is not throughput of the step.
        def epoch():
            for x, y in batches:
                net._train_step(optimizer, x, y)
            sync()
    else:
        def epoch():
            for x, _ in batches:
                net.forward(x)
            sync()
    return epoch


def _jax_runner(case, batches, train):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        raise Unavailable(f"JAX is not installed ({exc})") from None
    cpu = jax.devices("cpu")[0]
    weights, biases = init_params(case.sizes)
    params = jax.device_put([(w, b) for w, b in zip(weights, biases)], cpu)
    data = jax.device_put(batches, cpu)

    def forward_logits(params, x):
        a = x
        for w, b in params[:-1]:
            a = jax.nn.sigmoid(a @ w + b)
        w, b = params[-1]
        return a @ w + b

    def loss(params, x, y):
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(forward_logits(params, x)), axis=1))

    def sgd(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

    if train:
        # Donating the parameters lets XLA update them in place, as gpubp does.
        step = jax.jit(sgd, donate_argnums=0)
        state = {"params": params}

        def epoch():
            p = state["params"]
            for x, y in data:
                p = step(p, x, y)
            jax.block_until_ready(p)
            state["params"] = p
    else:
        predict = jax.jit(lambda params, x: jax.nn.softmax(forward_logits(params, x)))

        def epoch():
            out = None
            for x, _ in data:
                out = predict(params, x)
            jax.block_until_ready(out)
    return epoch


def _torch_runner(case, batches, train):
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"PyTorch is not installed ({exc})") from None
    weights, biases = init_params(case.sizes)
    params = [torch.tensor(a, requires_grad=True) for pair in zip(weights, biases)
              for a in pair]
    data = [(torch.from_numpy(x), torch.from_numpy(y.argmax(axis=1))) for x, y in batches]
    opt = torch.optim.SGD(params, lr=LR)

    def logits(x):
        a = x
        for i in range(0, len(params) - 2, 2):
            a = torch.sigmoid(torch.addmm(params[i + 1], a, params[i]))
        return torch.addmm(params[-1], a, params[-2])

    if train:
        def epoch():
            for x, labels in data:
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(logits(x), labels).backward()
                opt.step()
    else:
        def epoch():
            with torch.inference_mode():
                for x, _ in data:
                    torch.softmax(logits(x), dim=1)
    return epoch


PEERS = ("jax-jit", "torch-eager")


def make_runner(name, case, batches, train=True):
    """A zero-argument callable running one synchronised epoch of ``name`` on ``batches``.

    Parameters
    ----------
    name : str
        ``"reference"``, ``"cpu"``, ``"cuda"``, ``"cuda-<weight_grad>"``, ``"gemm-only"``,
        ``"gemm-only-cuda"`` or a peer in ``PEERS``.
    case : Case
    batches : list of (ndarray (P, n_0), ndarray (P, n_L))
    train : bool
        SGD steps (True) or forward-only inference (False).

    Raises
    ------
    Unavailable
        When the runner cannot run on this machine (no GPU, peer not installed).
    """
    if name == "jax-jit":
        return _jax_runner(case, batches, train)
    if name == "torch-eager":
        return _torch_runner(case, batches, train)
    if name.split("-")[0] in ("reference", "cpu", "cuda", "gemm"):
        return _backend_runner(name, case, batches, train)
    raise ValueError(f"runner must be one of reference, cpu, cuda, gemm-only[-cuda], {PEERS}; "
                     f"got {name!r}")


def time_epochs(epoch, repeats=5, warmup=1):
    """Wall-clock seconds of ``repeats`` calls of ``epoch`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        epoch()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return times


CUDA_VARIANTS = ("cuda-fused", "cuda-cublas")  # the weight_grad options of CudaBackend


def default_backends():
    """The gpubp backends that can run here: reference and cpu, plus cuda with a GPU."""
    return ("reference", "cpu") + (CUDA_VARIANTS if resolve_device("auto") == "cuda" else ())


def measure(cases=None, backends=None, peers=True, repeats=5, train=True,
            samples_per_epoch=SAMPLES_PER_EPOCH):
    """Median epoch times of every runner on every case.

    Returns
    -------
    list of dict
        One row per (case, runner) with keys ``case``, ``runner``, ``seconds`` (median
        epoch time, None when unavailable), ``samples_per_s``, ``gflops``, ``speedup``
        (over ``reference``), ``gemm_fraction`` (GEMM-only time / runner time) and
        ``note`` (why a runner was skipped); also ``best_seconds``, the fastest epoch.
    """
    cases = [parse_case(c) if isinstance(c, str) else c for c in (cases or CASES)]
    backends = tuple(backends or default_backends())
    gemms = ("gemm-only",) + (("gemm-only-cuda",) if any("cuda" in b for b in backends)
                              else ())
    runners = backends + (gemms if train else ()) + (PEERS if peers else ())
    rows = []
    for case in cases:
        n_batches = max(1, samples_per_epoch // case.batch_size)
        batches = make_batches(case, n_batches)
        samples = n_batches * case.batch_size
        results, epochs = {}, {}
        for name in runners:
            try:
                epochs[name] = make_runner(name, case, batches, train)
                epochs[name]()  # warm-up: JIT compilation and first-touch of buffers
            except Unavailable as exc:
                results[name] = (None, str(exc))
        # Round-robin: every round times each runner once, so a burst of load from another
        # process on this shared machine lands on all runners rather than on one.
        times = {name: [] for name in epochs}
        for _ in range(repeats):
            for name, epoch in epochs.items():
                times[name].extend(time_epochs(epoch, repeats=1, warmup=0))
        best = {name: min(ts) for name, ts in times.items()}
        for name, ts in times.items():
            results[name] = (statistics.median(ts), "")
        ref = results.get("reference", (None,))[0]
        for name in runners:
            sec, note = results[name]
            # Each runner against the GEMM-only bound of its own device.
            gemm = results.get("gemm-only-cuda" if "cuda" in name else "gemm-only", (None,))[0]
            rows.append({
                "case": case.name, "runner": name, "seconds": sec, "note": note,
                # Fastest epoch: on a shared machine interference only ever adds time.
                "best_seconds": best.get(name),
                "samples_per_s": samples / sec if sec else None,
                "gflops": case.flops(train) * n_batches / sec / 1e9 if sec else None,
                "speedup": ref / sec if sec and ref else None,
                "gemm_fraction": (gemm / sec if sec and gemm and not name.startswith("gemm-only")
                                  else None),
            })
    return rows


def format_table(rows, title=""):
    """The rows of :func:`measure` as a fixed-width text table."""
    head = f"{'case':<22} {'runner':<12} {'samples/s':>11} {'GFLOP/s':>8} " \
           f"{'x ref':>7} {'% GEMM bound':>12}"
    lines = [title, head, "-" * len(head)] if title else [head, "-" * len(head)]
    for r in rows:
        if r["seconds"] is None:
            lines.append(f"{r['case']:<22} {r['runner']:<12} {'skipped: ' + r['note']}")
            continue
        speed = f"{r['speedup']:.2f}" if r["speedup"] else "-"
        frac = f"{100 * r['gemm_fraction']:.0f}%" if r["gemm_fraction"] else "-"
        lines.append(f"{r['case']:<22} {r['runner']:<12} {r['samples_per_s']:>11,.0f} "
                     f"{r['gflops']:>8.1f} {speed:>7} {frac:>12}")
    return "\n".join(lines)


def run_bench(cases=None, backends=None, peers=True, repeats=5, file=sys.stdout,
              inference=False, samples_per_epoch=SAMPLES_PER_EPOCH):
    """Print the comparison table: samples/s per backend and peer, speed-up, GEMM bound.

    Parameters
    ----------
    cases : sequence of Case or str, optional
        Default :data:`CASES` (``"784-128-10@64"`` style strings are accepted).
    backends : sequence of str, optional
        gpubp backends to time; default those usable here (``cuda`` only with a GPU).
    peers : bool
        Also time JAX (``jit``) and PyTorch (eager) where installed.
    repeats : int
        Timed epochs per runner (the median is reported), after one warm-up epoch.
    file : file-like
        Where the table goes.
    inference : bool
        Also print a forward-only table.
    samples_per_epoch : int
        Rows per timed epoch (rounded down to whole batches, at least one batch).

    Returns
    -------
    list of dict
        The training rows of :func:`measure` (plus the inference rows when asked).
    """
    rows = measure(cases, backends, peers, repeats, True, samples_per_epoch)
    print(format_table(rows, f"Training (SGD), median of {repeats} epochs of "
                             f"~{samples_per_epoch} samples"), file=file)
    if inference:
        inf = measure(cases, backends, peers, repeats, False, samples_per_epoch)
        print("\n" + format_table(inf, "Inference (forward only)"), file=file)
        rows = rows + inf
    return rows
