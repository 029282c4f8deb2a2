"""The parts of ``benchmarks/gpu_check.py``, each run in its own process.

``python benchmarks/gpu_check_runners.py SECTION [ARGS]`` prints one JSON line (the
last line of its output): ``env``; ``kernels`` (every CUDA kernel against its NumPy
twin on device arrays); ``host CASE`` (host CPU µs per step of ``fit``); ``fit RUNNER
CASE STEPS`` (ms per training step). Only the packages of a GPU machine are needed
(CuPy, numba-cuda; torch and jax optional); nothing is installed.
"""

import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

LR = 0.05
PACKAGES = ("numpy", "cupy", "numba", "numba_cuda", "cuda.core", "torch", "jax", "jaxlib",
            "mpi4py", "pytest", "hypothesis",
            "scipy", "threadpoolctl", "tqdm", "pyarrow")  # the last four: gpubp's own needs


def _case(text):
    sizes, batch = text.split("@")
    return tuple(int(n) for n in sizes.split("-")), int(batch)


def _data(sizes, rows, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, sizes[0])).astype(np.float32)
    Y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], rows)]
    return X, Y


def env():
    """Versions, the probe's answer and the device."""
    found = {}
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
            found[name] = str(getattr(module, "__version__", "present"))
        except Exception as exc:  # noqa: BLE001 - absent or broken: say which
            found[name] = f"absent ({type(exc).__name__})"
    try:
        from gpubp.backends.devices import cuda_status  # gpubp itself may lack a dependency
    except ImportError as exc:
        return {"python": sys.version.split()[0], "packages": found, "cuda_usable": False,
                "probe": f"gpubp cannot be imported ({exc}): install its dependencies"}
    usable, reason = cuda_status()
    out = {"python": sys.version.split()[0], "packages": found, "cuda_usable": usable,
           "probe": reason, "NUMBA_ENABLE_CUDASIM": os.environ.get("NUMBA_ENABLE_CUDASIM", "")}
    if usable:
        import cupy  # a usable GPU: CuPy is there

        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(cupy.cuda.Device().id)
        out.update(device=props["name"].decode(), cc=f"{props['major']}.{props['minor']}",
                   memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
                   driver=rt.driverGetVersion(), runtime=rt.runtimeGetVersion())
    return out


def _compare(name, got, want, dtype, results, **what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    err = float(np.abs(got - want).max(initial=0)) / scale
    tol = 1e-5 if dtype == np.float32 else 1e-11
    results.append({"kernel": name, "dtype": np.dtype(dtype).name, **what, "error": err,
                    "ok": bool(err <= tol and np.isfinite(got).all())})


def _check_gather(xp, be, src, order, P, dtype, results):
    """A graph step's gather: rows ``order[3:3 + P]`` by a device offset, then advanced."""
    from gpubp.backends.cuda_graph import OffsetIndex
    from gpubp.kernels import reference as R

    src_dev, order_dev = be.resident(src), xp.asarray(order.astype(np.int64))
    offset, out = xp.full(1, 3, dtype=np.int64), xp.zeros((P, src.shape[1]), dtype)
    be.gather_rows(src_dev, OffsetIndex(order_dev, offset, P), out, None)
    want = np.zeros((P, src.shape[1]), dtype)
    R.gather_rows(src, order.astype(np.int64), np.array([3]), want)
    _compare("gather_rows", getattr(xp, "asnumpy", np.array)(out), want, dtype, results,
             shape=[P, src.shape[1]])


def _check_kernels_of(xp, be, dtype, P, n, results):
    """One shape and dtype: each kernel on device arrays vs its twin on host copies."""
    from gpubp.kernels import reference as R

    rng = np.random.default_rng(P * 1000 + n)
    host = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
    dev = lambda a: xp.array(a)  # noqa: E731 - a copy (the simulator's xp is NumPy)
    xp_asnumpy = getattr(xp, "asnumpy", np.array)
    shape = {"shape": [P, n]}
    for act in ("sigmoid", "tanh", "relu", "identity", "softmax"):
        z, b = host(P, n), host(n)
        z_dev = dev(z)
        be.bias_activation(z_dev, dev(b), act)
        R.bias_activation(z, b, act)
        _compare("bias_activation", xp_asnumpy(z_dev), z, dtype, results, activation=act, **shape)
    for act in ("sigmoid", "tanh", "relu", "identity"):
        d, a = host(P, n), np.abs(host(P, n)) * 0.5
        d_dev = dev(d)
        be.hidden_delta(d_dev, dev(a), act)
        R.hidden_delta(d, a, act)
        _compare("hidden_delta", xp_asnumpy(d_dev), d, dtype, results, activation=act, **shape)
    for act, loss in (("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"),
                      ("identity", "mse")):
        z = host(P, n)
        a = z.copy()
        R.bias_activation(a, np.zeros(n, dtype), act)
        y = np.eye(n, dtype=dtype)[rng.integers(0, n, P)]
        delta_dev, delta = xp.zeros((P, n), dtype), np.zeros((P, n), dtype)
        cost = float(be.output_delta(dev(a), dev(y), act, loss, delta_dev))
        want = R.output_delta(a, y, act, loss, delta)
        _compare("output_delta", xp_asnumpy(delta_dev), delta, dtype, results, loss=loss, **shape)
        _compare("output_delta cost", [cost], [want], dtype, results, loss=loss, **shape)
        be.correct_total.fill(0)  # the rows right, counted in the same kernel
        be.output_delta(dev(a), dev(y), act, loss, delta_dev)
        _compare("output_delta count", [int(be.correct_total[0])],
                 [R.count_correct(a, y, loss)], dtype, results, loss=loss, **shape)
    _check_gather(xp, be, host(P + 5, n), rng.permutation(P + 5), P, dtype, results)
    for variant in ("fused", "cublas"):
        be.weight_grad = variant
        a_prev, d = host(P, n + 3), host(P, n)
        dW, db = xp.zeros((n + 3, n), dtype), xp.zeros(n, dtype)
        be.weight_bias_gradients(dev(a_prev), dev(d), dW, db)
        want_W, want_b = np.zeros((n + 3, n), dtype), np.zeros(n, dtype)
        R.weight_bias_gradients(a_prev, d, want_W, want_b)
        _compare("weight_bias_gradients dW", xp_asnumpy(dW), want_W, dtype, results,
                 variant=variant, **shape)
        _compare("weight_bias_gradients db", xp_asnumpy(db), want_b, dtype, results,
                 variant=variant, **shape)
    size = P * n
    for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True)):
        p, g, v = host(size), host(size), host(size)
        p_dev, v_dev = dev(p), dev(v)
        be.sgd_update(p_dev, dev(g), v_dev if momentum else None, 0.1, momentum, nesterov, 1e-3)
        R.sgd_update(p, g, v if momentum else None, 0.1, momentum, nesterov, 1e-3)
        _compare("sgd_update", xp_asnumpy(p_dev), p, dtype, results,
                 variant=f"momentum={momentum} nesterov={nesterov}", shape=[size])
    p, g, m, v = host(size), host(size), host(size), np.abs(host(size))
    p_dev, m_dev, v_dev = dev(p), dev(m), dev(v)
    hyper = R.AdamStep(1e-3, 0.9, 0.999, 1e-8, 3, 1e-4)
    be.adam_update(p_dev, dev(g), m_dev, v_dev, hyper)
    R.adam_update(p, g, m, v, hyper)
    _compare("adam_update", xp_asnumpy(p_dev), p, dtype, results, shape=[size])


def kernels():
    """Every kernel, both dtypes, odd shapes, on a non-default stream."""
    import cupy  # the check runs on a GPU only

    from gpubp.backends.cuda import CudaBackend

    results, errors = [], []
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        be = CudaBackend()
        for dtype in (np.float32, np.float64):
            for P, n in ((1, 1), (37, 5), (130, 33), (1025, 10)):
                try:
                    _check_kernels_of(cupy, be, dtype, P, n, results)
                except Exception as exc:  # noqa: BLE001 - recorded, the rest still run
                    errors.append(f"{np.dtype(dtype).name} ({P}, {n}): "
                                  f"{type(exc).__name__}: {exc}")
        stream.synchronize()
    bad = [r for r in results if not r["ok"]]
    return {"checked": len(results), "failed": bad, "errors": errors,
            "ok": not bad and not errors, "gemm_error": _gemm_errors(cupy)}


def _gemm_errors(cupy):
    """Max relative error of a float32 GEMM (256 x 784 x 1024) against float64, for each
    ``precision``, through the backend's own ``matmul`` (docs/cuda.md, "precision")."""
    from gpubp.backends.cuda import CudaBackend

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(256, 784)), rng.normal(size=(784, 1024))
    want = a @ b
    errors = {}
    for precision in ("float32", "tf32"):
        be = CudaBackend(precision=precision)
        out = cupy.empty((256, 1024), np.float32)
        be.matmul(cupy.asarray(a, np.float32), cupy.asarray(b, np.float32), out)
        got = cupy.asnumpy(out).astype(np.float64)
        errors[precision] = float(np.abs(got - want).max() / np.abs(want).max())
    return errors


def _gpubp_net(sizes, device, **options):
    import gpubp

    return gpubp.Network(list(sizes), hidden="relu", output="softmax", loss="cross_entropy",
                         device=device, seed=0, fallback=False, **options)


def host(case, steps):
    """Host CPU time per ``fit`` step (``time.thread_time``: this thread's CPU, so the GPU
    work queued behind it is not counted), X and Y already on the device."""
    import cupy  # a GPU only

    sizes, batch = _case(case)
    steps = int(steps)
    X, Y = _data(sizes, batch * steps)
    X, Y = cupy.asarray(X), cupy.asarray(Y)
    out = {}
    for label, (options, graph) in (("eager", ({}, False)), ("graph", ({}, True)),
                                    ("tf32", ({"precision": "tf32"}, "auto"))):
        net = _gpubp_net(sizes, "cuda", **options)
        seconds = _epoch_seconds(net, X, Y, batch, clock=time.thread_time, cuda_graph=graph)
        out[label] = round(seconds / steps * 1e6, 1)
    return {"case": case, "host_us_per_step": out, "profile": _profile(net, X, Y, batch, steps)}


def _profile(net, X, Y, batch, steps, top=15):
    """Where a step's host time goes: the ``top`` functions by own time, µs per step."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    net.fit(X, Y, epochs=1, batch_size=batch, shuffle=False, verbose=0, lr=LR)  # warm
    profiler.enable()
    net.fit(X, Y, epochs=1, batch_size=batch, shuffle=False, verbose=0, lr=LR)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    return [f"{tottime / steps * 1e6:8.1f} us  {calls / steps:5.1f} calls  "
            f"{Path(file).name}:{line}({name})"
            for (file, line, name), (_, calls, tottime, _, _) in rows]


def _epoch_seconds(net, X, Y, batch, clock=time.perf_counter, epochs=4, **fit):
    """The fastest epoch of one ``fit`` of ``epochs`` epochs after the first, timed from
    each epoch's start to its end by a callback (the input checks of ``fit`` itself, paid
    once per call, are not charged to its steps; each epoch ends by reading its cost,
    which synchronises)."""
    from gpubp.training.callbacks import Callback  # gpubp's own, as fit calls it

    class EpochTimer(Callback):
        seconds = []

        def on_epoch_begin(self, run, epoch):
            self.t0 = clock()

        def on_epoch_end(self, run, epoch, logs):
            self.seconds.append(clock() - self.t0)

    timer = EpochTimer()
    net.fit(X, Y, epochs=epochs, batch_size=batch, shuffle=False, verbose=0, lr=LR,
            callbacks=[timer], **fit)
    return min(timer.seconds[1:])


def _time(epoch, steps, repeats=3):
    epoch()  # warm-up: compilation, cuBLAS handles, graphs
    best = min(epoch() for _ in range(repeats))
    return round(best / steps * 1e3, 4)


def _fit_gpubp(runner, sizes, batch, steps):
    device = "cpu" if runner == "gpubp-cpu" else "cuda"
    options = {"precision": "tf32"} if runner == "gpubp-cuda-tf32" else {}
    fit = {"cuda_graph": {"gpubp-cuda": False, "gpubp-cuda-graph": True}.get(runner, "auto")}
    net = _gpubp_net(sizes, device, **options)
    X, Y = _data(sizes, batch * steps)
    if device == "cuda":
        import cupy  # a GPU: the data are given on the device (trained on in place)

        X, Y = cupy.asarray(X), cupy.asarray(Y)

    return round(_epoch_seconds(net, X, Y, batch, **fit) / steps * 1e3, 4)


def _fit_torch(runner, sizes, batch, steps):
    import torch  # optional peer

    torch.manual_seed(0)
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    X, Y = _data(sizes, batch * steps)
    xs = torch.from_numpy(X).cuda().split(batch)
    ys = torch.from_numpy(Y.argmax(axis=1)).cuda().split(batch)
    loss_fn = torch.nn.functional.cross_entropy

    def step(x, y):
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    if runner == "torch-eager":
        def epoch():
            t0 = time.perf_counter()
            for x, y in zip(xs, ys):
                step(x, y)
            torch.cuda.synchronize()
            return time.perf_counter() - t0
        return _time(epoch, steps)
    static_x, static_y = xs[0].clone(), ys[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as the PyTorch docs say
        for _ in range(3):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static_x, static_y)

    def epoch():
        t0 = time.perf_counter()
        for x, y in zip(xs, ys):
            static_x.copy_(x)
            static_y.copy_(y)
            graph.replay()
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    return _time(epoch, steps)


def _fit_jax(sizes, batch, steps):
    import jax  # optional peer
    import jax.numpy as jnp

    gpu = jax.devices("gpu")[0]
    rng = np.random.default_rng(0)
    params = [(rng.normal(0, n_in ** -0.5, (n_in, n_out)).astype(np.float32),
               np.zeros(n_out, np.float32)) for n_in, n_out in zip(sizes, sizes[1:])]
    params = jax.device_put(params, gpu)
    X, Y = _data(sizes, batch * steps)
    data = jax.device_put([(X[i:i + batch], Y[i:i + batch]) for i in range(0, len(X), batch)],
                          gpu)

    def loss(p, x, y):
        a = x
        for w, b in p[:-1]:
            a = jax.nn.relu(a @ w + b)
        w, b = p[-1]
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(a @ w + b), axis=1))

    sgd = jax.jit(lambda p, x, y: jax.tree_util.tree_map(
        lambda q, g: q - LR * g, p, jax.grad(loss)(p, x, y)), donate_argnums=0)
    state = {"p": params}

    def epoch():
        t0 = time.perf_counter()
        p = state["p"]
        for x, y in data:
            p = sgd(p, x, y)
        jax.block_until_ready(p)
        state["p"] = p
        return time.perf_counter() - t0
    return _time(epoch, steps)


def fit(runner, case, steps):
    """ms per training step of ``runner`` on ``case`` (``784-128-10@64``)."""
    sizes, batch = _case(case)
    steps = int(steps)
    if runner.startswith("gpubp"):
        ms = _fit_gpubp(runner, sizes, batch, steps)
    elif runner.startswith("torch"):
        ms = _fit_torch(runner, sizes, batch, steps)
    elif runner == "jax-gpu":
        ms = _fit_jax(sizes, batch, steps)
    else:
        raise ValueError(f"unknown runner {runner!r}")
    return {"runner": runner, "case": case, "ms_per_step": ms, "steps": steps}


SECTIONS = {"env": env, "kernels": kernels, "host": host, "fit": fit}

if __name__ == "__main__":
    section, *args = sys.argv[1:]
    print(json.dumps(SECTIONS[section](*args)), flush=True)
