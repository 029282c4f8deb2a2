"""What the benchmarks time, in one process: the cases, their data, and one epoch per runner.

Every *runner* does the same work on the same data: a case's training of an MLP (its
hidden activation, softmax + cross-entropy, its optimizer and dtype; :class:`Case`) over
the same rows, shuffled, or forward-only inference over them. Runners:

- ``reference``, ``cpu``, ``cuda`` (``cuda-fused``, ``cuda-cublas``: its ``weight_grad``
  variants; ``cpu-blas1``, ``cpu-blas2``: the compiled epoch on that many BLAS threads
  whatever the size): :meth:`gpubp.Network.fit` itself, the user's path (``epochs=1,
  verbose=0``, shuffled: no in-place reading of rows), timed from the start to the end
  of its epoch by a callback, so that the one-time input checks a multi-epoch run pays
  once are not charged to each epoch; the epoch's own bookkeeping is. Inference is
  ``forward`` over each batch.
- ``gemm-only``: the matrix products of the same steps alone, into the same buffers, on
  the CPU through the same BLAS as the compiled epoch, in one compiled call per epoch, on
  one BLAS thread for small steps and otherwise the faster of one and all threads, timed
  each round, as ``fit`` chooses between them (``gemm-only-cuda``: the same through
  CuPy on a GPU). ``bound``: the GEMMs so, plus the step's elementwise work at the
  vectorised rate (:mod:`gpubp.bench.bound`), the physical bound of ``% of bound``.
- peers (:mod:`gpubp.bench.peers`): ``jax-scan`` (the whole epoch one ``jax.jit`` over
  ``lax.scan``), ``jax-jit``, ``jax-jit-nodonate``, ``torch-eager``, ``torch-compile``;
  the data on the peer's device before timing. Skipped, with the reason, when not
  installed or not able to run the case.

Each runner lives in its own process when measured (:mod:`gpubp.bench.compare` starts one worker
per runner with ``python -m gpubp.bench.runners`` and talks to it over stdin/stdout):
BLAS and XLA thread pools of one framework left spinning in a shared process would slow
the next one down.
"""

import itertools
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from gpubp.backends.devices import resolve_device
from gpubp.bench import peers
from gpubp.bench.peers import Unavailable  # noqa: F401 - re-exported: the runners' error


@dataclass(frozen=True)
class Case:
    """One benchmark problem: layer sizes and batch size (``784-128-10@64``), and the
    training: hidden activation, optimizer, dtype, dropout, per-step schedule
    (``784-512-512-10@128:gelu,adamw,float32,dropout=0.2,warmup_cosine``)."""

    sizes: tuple
    batch_size: int
    activation: str = "sigmoid"
    optimizer: str = "sgd"
    dtype: str = "float32"
    dropout: float = 0.0
    schedule: str = ""

    @property
    def name(self):
        base = "-".join(map(str, self.sizes)) + f"@{self.batch_size}"
        if (self.activation, self.optimizer, self.dtype, self.dropout, self.schedule) == \
                ("sigmoid", "sgd", "float32", 0.0, ""):
            return base
        extras = ([f"dropout={self.dropout:g}"] if self.dropout else []) + \
            ([self.schedule] if self.schedule else [])
        return base + ":" + ",".join([self.activation, self.optimizer, self.dtype] + extras)

    @property
    def lr(self):
        """The learning rate: 0.05 for SGD and momentum, 1e-3 for Adam and AdamW."""
        return LR if self.optimizer in ("sgd", "momentum") else 1e-3

    def flops(self, train=True):
        """FLOPs of one step: ``6·P·Σ n_{l-1} n_l`` for training, a third for inference.

        Forward is one GEMM per layer (2·P·n_{l-1}·n_l); the backward pass adds two (the
        weight gradient and the propagated delta), counted for every layer for simplicity.
        """
        mult = 6 if train else 2
        return mult * self.batch_size * sum(a * b for a, b in zip(self.sizes, self.sizes[1:]))


CASES = (
    Case((64, 64, 10), 32),
    Case((784, 128, 10), 64),
    Case((784, 512, 512, 10), 128),
    Case((784, 1024, 1024, 10), 256),
)

SIZES = ("64-64-10@32", "784-128-10@64", "784-256-256-10@128", "784-512-10@512",
         "784-512-512-10@128", "784-1024-1024-10@256")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
DTYPES = ("float32", "float64")
# `gpubp bench --matrix full`: every size, activation, optimizer and dtype; a modern MLP
FULL = tuple(f"{size}:{act},{opt},{dtype}" for size in SIZES for act in ACTIVATIONS
             for opt in OPTIMIZERS for dtype in DTYPES) + (
    "784-512-512-10@128:gelu,adamw,float32,dropout=0.2,warmup_cosine",)
# `gpubp bench --matrix quick`: the main job's network, issue 20's cases, the modern MLP
QUICK = ("64-64-10@32", "784-256-256-10@128:relu,adam,float32",
         "784-1024-1024-10@256:relu,momentum,float32", "784-256-256-10@128:tanh,sgd,float64",
         "784-512-512-10@128:gelu,adamw,float32,dropout=0.2,warmup_cosine")

SAMPLES_PER_EPOCH = 4096
LR = 0.05
CUDA_VARIANTS = ("cuda-fused", "cuda-cublas")  # the weight_grad options of CudaBackend
PEERS = ("jax-scan", "jax-jit", "jax-jit-nodonate", "torch-eager", "torch-compile")
# the gpubp runners `gpubp bench --backend` takes
BACKEND_RUNNERS = ("reference", "cpu", "cuda") + CUDA_VARIANTS + ("cpu-blas1", "cpu-blas2")


def parse_case(text):
    """``"784-128-10@64"`` or ``"784-128-10@64:tanh,adam,float64[,dropout=P][,warmup_cosine]"``
    -> :class:`Case`."""
    shape, _, training = text.partition(":")
    try:
        sizes, batch = shape.split("@")
        case = Case(tuple(int(s) for s in sizes.split("-")), int(batch),
                    **_training(training))
    except ValueError:
        raise ValueError(f"case must look like '784-128-10@64' or "
                         f"'784-128-10@64:tanh,adam,float64', got {text!r}") from None
    if len(case.sizes) < 2 or min(case.sizes) < 1 or case.batch_size < 1:
        raise ValueError(f"case must look like '784-128-10@64' (at least two layer sizes and a "
                         f"batch size, all positive), got {text!r}")
    return case


def _training(text):
    """The keyword arguments of :class:`Case` after the ``:`` of a case name."""
    if not text:
        return {}
    words = text.split(",")
    if len(words) < 3 or words[0] not in ACTIVATIONS or words[1] not in OPTIMIZERS \
            or words[2] not in DTYPES:
        raise ValueError(text)
    out = {"activation": words[0], "optimizer": words[1], "dtype": words[2]}
    for word in words[3:]:
        if word.startswith("dropout="):
            out["dropout"] = float(word[len("dropout="):])
        elif word == "warmup_cosine":
            out["schedule"] = word
        else:
            raise ValueError(word)
    return out


def make_batches(case, n_batches, dtype=None, seed=0):
    """Inputs in [0, 1) and one-hot targets, ``n_batches`` pairs of shapes (P, n_0), (P, n_L)."""
    rng = np.random.default_rng(seed)
    dtype = dtype or case.dtype
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


def make_network(backend, case, dtype=None, seed=0, **backend_options):
    """A :class:`gpubp.Network` of the benchmark's architecture with :func:`init_params`, on
    the gpubp backend ``backend`` (``cuda`` runs on the GPU, the others on the CPU)."""
    from gpubp.core.network import Network  # a runner process imports only what it runs (JAX's and PyTorch's never load gpubp's JIT)

    device, dtype = ("cuda" if backend == "cuda" else "cpu"), dtype or case.dtype
    net = Network(list(case.sizes), hidden=case.activation, output="softmax",
                  loss="cross_entropy", device=device, dtype=dtype, seed=seed,
                  backend=backend, fallback=False, dropout=case.dropout, **backend_options)
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


# -- runners: each returns a zero-argument callable doing one epoch, returning its seconds --


def _stacked(batches):
    return tuple(np.ascontiguousarray(np.concatenate(arrays)) for arrays in zip(*batches))


def _timed(run, sync=None):
    def epoch():
        t0 = time.perf_counter()
        run()
        if sync is not None:
            sync()
        return time.perf_counter() - t0
    return epoch


def make_optimizer(case, steps=None):
    """gpubp's optimizer of ``case`` (momentum 0.9, AdamW's decay 0.01, PyTorch's
    defaults otherwise) for runs of ``steps`` steps per epoch, the peers' warm-up over
    their first tenth (:func:`gpubp.bench.peers.lr_at`) where the case has a schedule."""
    from gpubp.optim import optimizers, schedules  # as above: only in gpubp's own runners

    schedule = None
    if case.schedule == "warmup_cosine":
        if steps is None:
            raise ValueError("make_optimizer: a warmup_cosine case needs steps, got None")
        warm = max(1, int(peers.WARMUP_FRACTION * steps))
        schedule = schedules.WarmupCosine(warmup_steps=warm, start_factor=1 / warm)
    elif case.schedule:
        raise Unavailable(f"gpubp has no schedule {case.schedule!r}")
    if case.optimizer == "adamw":
        return optimizers.AdamW(lr=case.lr, weight_decay=peers.WEIGHT_DECAY_ADAMW,
                                schedule=schedule)
    if case.optimizer == "adam":
        return optimizers.Adam(lr=case.lr, schedule=schedule)
    return optimizers.SGD(lr=case.lr, momentum=peers.MOMENTUM if case.optimizer == "momentum"
                          else 0.0, schedule=schedule)


def _fit_epoch(net, X, Y, case):
    """One epoch of ``net.fit`` (shuffled), timed inside fit from epoch begin to end."""
    from gpubp.training.callbacks import Callback  # as above: only in gpubp's own runners

    class EpochTimer(Callback):
        def on_epoch_begin(self, run, epoch):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, run, epoch, logs):
            self.seconds = time.perf_counter() - self.t0

    optimizer = make_optimizer(case, -(-len(X) // case.batch_size))

    def epoch():
        timer = EpochTimer()
        net.fit(X, Y, epochs=1, batch_size=case.batch_size, shuffle=True, verbose=0,
                optimizer=optimizer, callbacks=[timer])
        return timer.seconds
    return epoch


def _gemm_only_cpu(net, case, n_batches):
    from gpubp.core import compiled  # as above: Numba compiles the epoch on import
    from gpubp.kernels.cpu_epoch import gemm_epoch

    buffers, (layout, _) = compiled.buffers(net), compiled.layout(net)

    def run(threads):
        with compiled.BlasThreads(threads):
            gemm_epoch(n_batches, case.batch_size, buffers, layout)

    threads = compiled.blas_threads(net.sizes, case.batch_size)
    if threads is not None:
        return _timed(lambda: run(threads))
    # A bound must not depend on a noisy one-off choice: every timing runs the epoch on one
    # and on all BLAS threads and keeps the faster (fit's probe picks between the same two).
    run(None)  # compile, and wake the BLAS threads
    timings = [_timed(lambda t=t: run(t)) for t in (1, None)]
    return lambda: min(timing() for timing in timings)


def _backend_runner(name, case, batches, train):
    """Runners ``reference``, ``cpu``, ``cuda[-<weight_grad>]`` and ``gemm-only[-cuda]``."""
    if name.startswith("gemm-only"):
        backend, options = ("cuda" if name.endswith("cuda") else "cpu"), {}
    else:
        backend, _, variant = name.partition("-")
        options = {"weight_grad": variant} if variant else {}
        if backend == "cpu" and variant.startswith("blas"):
            # cpu-blas1, cpu-blas2: that many BLAS threads whatever the size, to measure
            from gpubp.core import compiled  # where blas_threads should switch

            threads = int(variant[4:])
            compiled.blas_threads = lambda sizes, batch_size: threads
            options = {}
    if backend == "cuda" and resolve_device("auto") != "cuda":
        raise Unavailable("no usable CUDA GPU")
    try:
        net = make_network(backend, case, **options)
    except (TypeError, ValueError) as exc:
        raise Unavailable(f"{name}: {exc}") from None
    X, Y = _stacked(batches)
    if name.startswith("gemm-only"):
        _fit_epoch(net, X, Y, case)()  # realistic values in every buffer
        if backend == "cpu":
            return _gemm_only_cpu(net, case, len(batches))
        P = case.batch_size
        return _timed(lambda: [gemm_step(net, P) for _ in batches], net.backend.synchronize)
    if train:
        return _fit_epoch(net, X, Y, case)
    return _timed(lambda: [net.forward(x) for x, _ in batches], net.backend.synchronize)


def _peer_runner(name, case, batches, train):
    """A peer of :mod:`gpubp.bench.peers` on the stacked batches: training over a fresh
    permutation of the rows each epoch (drawn before the clock starts), or inference."""
    X, Y = _stacked(batches)
    params = list(zip(*init_params(case.sizes, case.dtype)))
    if not train:
        return _timed(peers.predictor(name, case, batches, params))
    build = peers.jax_runner if name.startswith("jax") else peers.torch_runner
    run = build(name, case, X, Y, params, case.lr)
    rng = np.random.default_rng(1)

    def epoch():
        order = rng.permutation(X.shape[0])
        return _timed(lambda: run(order))()
    return epoch


def make_runner(name, case, batches, train=True):
    """A zero-argument callable running one epoch of ``name``; it returns the epoch's seconds.

    Parameters
    ----------
    name : str
        ``"reference"``, ``"cpu"``, ``"cuda"``, ``"cuda-<weight_grad>"``, ``"gemm-only"``,
        ``"gemm-only-cuda"``, ``"bound"`` or a peer in ``PEERS``.
    case : Case
    batches : list of (ndarray (P, n_0), ndarray (P, n_L))
    train : bool
        SGD steps (True) or forward-only inference (False).

    Raises
    ------
    Unavailable
        When the runner cannot run on this machine (no GPU, peer not installed).
    """
    if name in PEERS:
        return _peer_runner(name, case, batches, train)
    if name == "bound":  # the GEMMs as gemm-only, plus the elementwise work
        from gpubp.bench.bound import bound_runner  # only the bound runner needs SciPy's ufuncs
        return bound_runner(case, _backend_runner("gemm-only", case, batches, train), len(batches))
    if name.split("-")[0] in ("reference", "cpu", "cuda", "gemm"):
        return _backend_runner(name, case, batches, train)
    raise ValueError(f"runner must be one of reference, cpu, cuda, gemm-only[-cuda], bound, "
                     f"{PEERS}; got {name!r}")


def time_epochs(epoch, repeats=5, warmup=1):
    """Seconds of ``repeats`` epochs (as each reports them) after ``warmup`` untimed ones."""
    [epoch() for _ in range(warmup)]
    return [epoch() for _ in range(repeats)]


# -- the worker process ----------------------------------------------------------------------
def serve(stdin=sys.stdin, stdout=sys.stdout):
    """Worker loop: read a runner spec, build and warm it up, then time one epoch per request.

    Protocol (one JSON object per line): the parent sends ``{"runner", "case"`` (its
    name), ``"n_batches", "train"}``; the worker answers ``{"ready": true}`` or
    ``{"unavailable": reason}``; then each line ``"epoch"`` is answered with
    ``{"seconds": s, "parts": p}`` (``p`` None but for ``bound``), until ``"quit"``.
    """
    def reply(obj):
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    sys.stdout = sys.stderr  # whatever else prints must not garble the replies

    spec = json.loads(stdin.readline())
    case = parse_case(spec["case"])
    try:
        epoch = make_runner(spec["runner"], case, make_batches(case, spec["n_batches"]),
                            spec["train"])
        epoch()  # warm-up: JIT compilation and first touch of the buffers
    except Unavailable as exc:
        reply({"unavailable": str(exc)})
        return
    reply({"ready": True})
    for line in stdin:
        if line.strip() != "epoch":
            break
        seconds = epoch()  # the bound runner's parts too (gpubp.bench.bound)
        reply({"seconds": seconds, "parts": getattr(epoch, "parts", None)})


if __name__ == "__main__":
    serve()
