"""What the benchmarks time, in one process: the cases, their data, and one epoch per runner.

Every *runner* does the same work on the same data: SGD on an MLP (sigmoid hidden layers,
softmax + cross-entropy, float32) over the same rows in the same order, or forward-only
inference over them. Runners:

- ``reference``, ``cpu``, ``cuda`` (``cuda-fused``, ``cuda-cublas``: its ``weight_grad``
  variants; ``cpu-blas1``, ``cpu-blas2``: the compiled epoch on that many BLAS threads
  whatever the size): :meth:`gpubp.Network.fit` itself, the user's path (``epochs=1,
  shuffle=False, verbose=0``), timed from the start to the end of its epoch by a callback,
  so that the one-time input checks a multi-epoch run pays once are not charged to each
  epoch; the epoch's own bookkeeping (parameter snapshot, figures, history) is. Inference
  is ``forward`` over each batch.
- ``gemm-only``: the matrix products of the same steps alone, into the same buffers, on
  the CPU through the same BLAS as the compiled epoch, in one compiled call per epoch, on
  one BLAS thread for small steps and otherwise the faster of one and all threads, timed
  each round, as ``fit`` chooses between them (``gemm-only-cuda``: the same through
  CuPy on a GPU). Its time is the bound the rest of the step is measured against.
- peers: ``jax-jit`` (``jax.jit`` of the whole step, parameters donated),
  ``jax-jit-nodonate`` (the same without donation; each peer is reported at its best),
  ``torch-eager`` (autograd + ``torch.optim.SGD``); batches are on the peer's device
  before timing. Skipped, with the reason, when not installed.

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
    Case((64, 64, 10), 32),
    Case((784, 128, 10), 64),
    Case((784, 512, 512, 10), 128),
    Case((784, 1024, 1024, 10), 256),
)

SAMPLES_PER_EPOCH = 4096
LR = 0.05
CUDA_VARIANTS = ("cuda-fused", "cuda-cublas")  # the weight_grad options of CudaBackend
PEERS = ("jax-jit", "jax-jit-nodonate", "torch-eager")
# the gpubp runners `gpubp bench --backend` takes
BACKEND_RUNNERS = ("reference", "cpu", "cuda") + CUDA_VARIANTS + ("cpu-blas1", "cpu-blas2")


def parse_case(text):
    """``"784-128-10@64"`` -> :class:`Case`."""
    try:
        sizes, batch = text.split("@")
        case = Case(tuple(int(s) for s in sizes.split("-")), int(batch))
    except ValueError:
        raise ValueError(f"case must look like '784-128-10@64', got {text!r}") from None
    if len(case.sizes) < 2 or min(case.sizes) < 1 or case.batch_size < 1:
        raise ValueError(f"case must look like '784-128-10@64' (at least two layer sizes and a "
                         f"batch size, all positive), got {text!r}")
    return case


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
    from gpubp.core.network import Network  # a runner process imports only what it runs (JAX's and PyTorch's never load gpubp's JIT)

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


# -- runners: each returns a zero-argument callable doing one epoch, returning its seconds --
class Unavailable(Exception):
    """A runner that cannot run here; the message says why."""


def _stacked(batches):
    return (np.ascontiguousarray(np.concatenate([x for x, _ in batches])),
            np.ascontiguousarray(np.concatenate([y for _, y in batches])))


def _timed(run, sync=None):
    def epoch():
        t0 = time.perf_counter()
        run()
        if sync is not None:
            sync()
        return time.perf_counter() - t0
    return epoch


def _fit_epoch(net, X, Y, batch_size):
    """One epoch of ``net.fit``, timed inside fit from epoch begin to epoch end."""
    from gpubp.training.callbacks import Callback  # as above: only in gpubp's own runners
    from gpubp.optim.optimizers import SGD

    class EpochTimer(Callback):
        def on_epoch_begin(self, run, epoch):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, run, epoch, logs):
            self.seconds = time.perf_counter() - self.t0

    def epoch():
        timer = EpochTimer()
        net.fit(X, Y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0,
                optimizer=SGD(lr=LR), callbacks=[timer])
        return timer.seconds
    return epoch


def _gemm_only_cpu(net, case, n_batches):
    from gpubp.core import compiled  # as above: Numba compiles the epoch on import
    from gpubp.kernels.cpu_epoch import gemm_epoch

    buffers, (layout, _) = compiled.buffers(net), compiled.layout(net)

    def run(threads):
        with compiled._BlasThreads(threads):
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
            # cpu-blas1, cpu-blas2: the compiled epoch with that many BLAS threads whatever
            # the size, to measure where compiled.blas_threads should switch (this process
            # runs nothing else)
            from gpubp.core import compiled

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
        _fit_epoch(net, X, Y, case.batch_size)()  # realistic values in every buffer
        if backend == "cpu":
            return _gemm_only_cpu(net, case, len(batches))
        P = case.batch_size
        return _timed(lambda: [gemm_step(net, P) for _ in batches], net.backend.synchronize)
    if train:
        return _fit_epoch(net, X, Y, case.batch_size)
    return _timed(lambda: [net.forward(x) for x, _ in batches], net.backend.synchronize)


def _jax_runner(case, batches, train, donate=True):
    try:
        import jax  # optional: JAX (gpubp[bench])
        import jax.numpy as jnp
    except ImportError as exc:
        raise Unavailable(f"JAX is not installed ({exc})") from None
    cpu = jax.devices("cpu")[0]
    weights, biases = init_params(case.sizes)
    state = {"params": jax.device_put([(w, b) for w, b in zip(weights, biases)], cpu)}
    data = jax.device_put(batches, cpu)  # preloaded: the timed loop moves no data

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
        # Donating the parameters lets XLA update them in place, as gpubp does; whether
        # that is faster depends on the size, so both variants are runners.
        step = jax.jit(sgd, donate_argnums=0) if donate else jax.jit(sgd)

        def run():
            p = state["params"]
            for x, y in data:
                p = step(p, x, y)
            jax.block_until_ready(p)
            state["params"] = p
        return _timed(run)
    predict = jax.jit(lambda params, x: jax.nn.softmax(forward_logits(params, x)))

    def run():
        out = None
        for x, _ in data:
            out = predict(state["params"], x)
        jax.block_until_ready(out)
    return _timed(run)


def _torch_runner(case, batches, train):
    try:
        import torch  # optional: PyTorch (gpubp[bench])
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
        def run():
            for x, labels in data:
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(logits(x), labels).backward()
                opt.step()
        return _timed(run)

    def run():
        with torch.inference_mode():
            for x, _ in data:
                torch.softmax(logits(x), dim=1)
    return _timed(run)


def make_runner(name, case, batches, train=True):
    """A zero-argument callable running one epoch of ``name``; it returns the epoch's seconds.

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
    if name in ("jax-jit", "jax-jit-nodonate"):
        return _jax_runner(case, batches, train, donate=name == "jax-jit")
    if name == "torch-eager":
        return _torch_runner(case, batches, train)
    if name.split("-")[0] in ("reference", "cpu", "cuda", "gemm"):
        return _backend_runner(name, case, batches, train)
    raise ValueError(f"runner must be one of reference, cpu, cuda, gemm-only[-cuda], {PEERS}; "
                     f"got {name!r}")


def time_epochs(epoch, repeats=5, warmup=1):
    """Seconds of ``repeats`` epochs (as each reports them) after ``warmup`` untimed ones."""
    for _ in range(warmup):
        epoch()
    return [epoch() for _ in range(repeats)]


# -- the worker process ----------------------------------------------------------------------
def serve(stdin=sys.stdin, stdout=sys.stdout):
    """Worker loop: read a runner spec, build and warm it up, then time one epoch per request.

    Protocol (one JSON object per line): the parent sends ``{"runner", "sizes",
    "batch_size", "n_batches", "train"}``; the worker answers ``{"ready": true}`` or
    ``{"unavailable": reason}``; then each line ``"epoch"`` is answered with
    ``{"seconds": s}``, until ``"quit"`` or end of input.
    """
    def reply(obj):
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    sys.stdout = sys.stderr  # whatever else prints must not garble the replies

    spec = json.loads(stdin.readline())
    case = Case(tuple(spec["sizes"]), spec["batch_size"])
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
        reply({"seconds": epoch()})


if __name__ == "__main__":
    serve()
