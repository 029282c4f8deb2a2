"""The peers of the benchmarks at their best: JAX and PyTorch doing a case's training.

Every peer trains the case's network (its hidden activation, softmax + cross-entropy,
its optimizer and dtype, dropout and a per-step warm-up + cosine schedule where the case
asks) on the same rows in the same shuffled order as gpubp, the gather of each batch's
rows inside the timed work, and with the same initial parameters
(:func:`gpubp.bench.runners.init_params`):

- ``jax-scan``: the whole epoch one ``jax.jit`` over ``lax.scan`` of the batches, the
  gather inside the scan (JAX's best form, the shape of gpubp's compiled epoch);
- ``jax-jit``, ``jax-jit-nodonate``: one jitted step per batch (parameters donated, or
  not), dispatched from Python;
- ``torch-eager``: autograd + ``torch.optim``; ``torch-compile``: the same step through
  ``torch.compile`` (skipped, with the reason, where it cannot compile here).

Each builder returns ``run``: ``run(order)`` trains one epoch over the rows in ``order``
(an int array of the epoch's permutation) and waits for the result; ``run.params()``
gives the parameters as NumPy ``(W, b)`` pairs (the tests compare them with gpubp's).
"""

import math

import numpy as np

MOMENTUM = 0.9  # SGD with momentum, PyTorch's form (v = μ v + g), in every runner
WARMUP_FRACTION = 0.1  # of the epoch's steps, for the "warmup_cosine" schedule
WEIGHT_DECAY_ADAMW = 0.01  # PyTorch's AdamW default


class Unavailable(Exception):
    """A runner that cannot run here; the message says why."""


def lr_at(case, step, n_steps, lr):
    """The learning rate of ``step`` (0-based) of ``n_steps``: constant, or linear warm-up
    over the first tenth then cosine decay to 0 (``case.schedule == "warmup_cosine"``)."""
    if case.schedule != "warmup_cosine":
        return lr
    warm = max(1, int(WARMUP_FRACTION * n_steps))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, n_steps - warm)))


# -- JAX ------------------------------------------------------------------------------------
def _jax_step(case, lr, jax, jnp):
    """The pure training step ``(params, state, x, y, key, lr_t) -> (params, state)``."""
    act = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
           "gelu": lambda z: jax.nn.gelu(z, approximate=False)}.get(case.activation)
    if act is None:
        raise Unavailable(f"no JAX activation {case.activation!r}")

    def loss(params, x, y, key):
        a = x
        for i, (w, b) in enumerate(params[:-1]):
            a = act(a @ w + b)
            if case.dropout:
                keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1 - case.dropout,
                                            a.shape)
                a = jnp.where(keep, a / (1 - case.dropout), 0)
        w, b = params[-1]
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(a @ w + b), axis=1))

    def step(params, state, x, y, key, lr_t):
        g = jax.grad(loss)(params, x, y, key)
        tree = jax.tree_util.tree_map
        if case.optimizer == "sgd":
            return tree(lambda p, d: p - lr_t * d, params, g), state
        if case.optimizer == "momentum":  # PyTorch's form: v = μ v + g, p -= lr v
            v = tree(lambda v, d: MOMENTUM * v + d, state["v"], g)
            return tree(lambda p, v: p - lr_t * v, params, v), {"v": v}
        t = state["t"] + 1
        m = tree(lambda m, d: 0.9 * m + 0.1 * d, state["m"], g)
        v = tree(lambda v, d: 0.999 * v + 0.001 * d * d, state["v"], g)
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        decay = WEIGHT_DECAY_ADAMW if case.optimizer == "adamw" else 0.0
        new = tree(lambda p, m, v: p * (1 - lr_t * decay)
                   - lr_t * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), params, m, v)
        return new, {"m": m, "v": v, "t": t}
    return step


def jax_runner(name, case, X, Y, params, lr):
    """``jax-scan``, ``jax-jit`` or ``jax-jit-nodonate`` for ``case`` on rows ``X``, ``Y``."""
    try:
        import jax  # optional: JAX (gpubp[bench])
        import jax.numpy as jnp
    except ImportError as exc:
        raise Unavailable(f"JAX is not installed ({exc})") from None
    if case.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    cpu = jax.devices("cpu")[0]
    step = _jax_step(case, lr, jax, jnp)
    P = case.batch_size
    n_steps = X.shape[0] // P
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
    state0 = ({} if case.optimizer == "sgd" else {"v": zeros()} if case.optimizer == "momentum"
              else {"m": zeros(), "v": zeros(), "t": jnp.zeros((), case.dtype)})
    box = {"params": jax.device_put(params, cpu), "state": jax.device_put(state0, cpu)}
    Xd, Yd = jax.device_put(X, cpu), jax.device_put(Y, cpu)
    rates = jnp.asarray([lr_at(case, s, n_steps, lr) for s in range(n_steps)], case.dtype)
    key0 = jax.random.PRNGKey(0)

    if name == "jax-scan":
        def epoch(params, state, X, Y, batches, rates, key):
            def body(carry, xs):
                idx, lr_t, s = xs
                p, st = step(*carry, X[idx], Y[idx], jax.random.fold_in(key, s), lr_t)
                return (p, st), None
            steps = jnp.arange(batches.shape[0])
            return jax.lax.scan(body, (params, state), (batches, rates, steps))[0]
        compiled = jax.jit(epoch, donate_argnums=(0, 1))

        def run(order):
            batches = jnp.asarray(order[:n_steps * P].reshape(n_steps, P))
            box["params"], box["state"] = compiled(box["params"], box["state"], Xd, Yd,
                                                   batches, rates, key0)
            jax.block_until_ready(box["params"])
        run.params = lambda: jax.tree_util.tree_map(np.asarray, box["params"])
        return run

    def one(params, state, X, Y, idx, lr_t, key):
        return step(params, state, X[idx], Y[idx], key, lr_t)
    jitted = jax.jit(one, donate_argnums=(0, 1)) if name == "jax-jit" else jax.jit(one)

    def run(order):
        batches = jnp.asarray(order[:n_steps * P].reshape(n_steps, P))
        p, st = box["params"], box["state"]
        for s in range(n_steps):
            p, st = jitted(p, st, Xd, Yd, batches[s], rates[s], jax.random.fold_in(key0, s))
        jax.block_until_ready(p)
        box["params"], box["state"] = p, st
    run.params = lambda: jax.tree_util.tree_map(np.asarray, box["params"])
    return run


# -- PyTorch --------------------------------------------------------------------------------
def torch_runner(name, case, X, Y, params, lr):
    """``torch-eager`` or ``torch-compile`` for ``case`` on rows ``X``, ``Y``."""
    try:
        import torch  # optional: PyTorch (gpubp[bench])
    except ImportError as exc:
        raise Unavailable(f"PyTorch is not installed ({exc})") from None
    F = torch.nn.functional
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "gelu": F.gelu}.get(case.activation)
    if act is None:
        raise Unavailable(f"no PyTorch activation {case.activation!r}")
    theta = [torch.tensor(a, requires_grad=True) for pair in params for a in pair]
    Xt, labels = torch.from_numpy(X), torch.from_numpy(Y.argmax(axis=1))
    opt = {"sgd": lambda: torch.optim.SGD(theta, lr=lr),
           "momentum": lambda: torch.optim.SGD(theta, lr=lr, momentum=MOMENTUM),
           "adam": lambda: torch.optim.Adam(theta, lr=lr),
           "adamw": lambda: torch.optim.AdamW(theta, lr=lr, weight_decay=WEIGHT_DECAY_ADAMW)
           }[case.optimizer]()

    def loss(x, y):
        a = x
        for i in range(0, len(theta) - 2, 2):
            a = act(torch.addmm(theta[i + 1], a, theta[i]))
            if case.dropout:
                a = F.dropout(a, case.dropout, training=True)
        return F.cross_entropy(torch.addmm(theta[-1], a, theta[-2]), y)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss(x, y).backward()
        opt.step()

    if name == "torch-compile":
        try:
            step = torch.compile(step)
            step(Xt[:case.batch_size], labels[:case.batch_size])  # compiles, or fails here
        except Exception as exc:  # noqa: BLE001 - whatever stops the compiler is the reason
            raise Unavailable(f"torch.compile fails here: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]}") from None
    P = case.batch_size
    n_steps = X.shape[0] // P

    def run(order):
        idx = torch.from_numpy(order[:n_steps * P].reshape(n_steps, P))
        for s in range(n_steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(case, s, n_steps, lr)
            step(Xt[idx[s]], labels[idx[s]])
    run.params = lambda: [(theta[i].detach().numpy(), theta[i + 1].detach().numpy())
                          for i in range(0, len(theta), 2)]
    return run


def predictor(name, case, batches, params):
    """Forward-only inference of a peer over ``batches``: a callable doing one pass
    (``jax-*``: one jitted forward per batch; ``torch-*``: eager, inference mode)."""
    if name.startswith("jax"):
        try:
            import jax  # optional: JAX (gpubp[bench])
        except ImportError as exc:
            raise Unavailable(f"JAX is not installed ({exc})") from None
        act = {"sigmoid": jax.nn.sigmoid, "tanh": jax.numpy.tanh, "relu": jax.nn.relu,
               "gelu": lambda z: jax.nn.gelu(z, approximate=False)}[case.activation]

        def forward(params, x):
            for w, b in params[:-1]:
                x = act(x @ w + b)
            return jax.nn.softmax(x @ params[-1][0] + params[-1][1])
        cpu = jax.devices("cpu")[0]
        p, data = jax.device_put(params, cpu), jax.device_put([x for x, _ in batches], cpu)
        predict = jax.jit(forward)
        return lambda: jax.block_until_ready([predict(p, x) for x in data])
    try:
        import torch  # optional: PyTorch (gpubp[bench])
    except ImportError as exc:
        raise Unavailable(f"PyTorch is not installed ({exc})") from None
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "gelu": torch.nn.functional.gelu}[case.activation]
    theta = [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in params]
    data = [torch.from_numpy(x) for x, _ in batches]

    def run():
        with torch.inference_mode():
            for x in data:
                for w, b in theta[:-1]:
                    x = act(torch.addmm(b, x, w))
                torch.softmax(torch.addmm(theta[-1][1], x, theta[-1][0]), dim=1)
    return run
