"""``fit(cuda_graph=...)``: an epoch of CUDA-graph steps, and which runs may take them.

``cuda_graph="auto"`` (the default) replays a captured graph of the whole step (gather,
forward, backward, update; :mod:`gpubp.backends.cuda_graph`) wherever the run allows it
and trains eagerly, silently, where it does not (as PyTorch's ``torch.compile(mode=
"reduce-overhead")`` falls back to eager code); ``True`` insists, and a run that cannot
take graphs is a ValueError that says why (so is ``True`` on a CPU backend, where there is
nothing to capture); ``False`` never captures. A graph fixes every launch argument at
capture, so a run may take them only when nothing but the batch changes from step to
step: :func:`why_not` lists what does.
"""

from gpubp.backends.cuda_graph import StepGraphs
from gpubp.core import backprop, dropout
from gpubp.core.reduction import Identity


def check_mode(mode, backend_name):
    """``mode`` checked: "auto", True or False; True only on the cuda backend."""
    if not (mode is True or mode is False or (isinstance(mode, str) and mode == "auto")):
        raise ValueError(f"cuda_graph must be 'auto', True or False, got {mode!r}")
    if mode is True and backend_name != "cuda":
        raise ValueError(f"cuda_graph=True needs device='cuda' (CUDA graphs capture GPU "
                         f"work), got the {backend_name!r} backend")


def why_not(net, optimizer, plan, data):
    """None when this run's steps can be CUDA-graph replays; else the reason, a phrase."""
    X, Y = data
    o, be = plan.options, net.backend
    if be.name != "cuda":
        return f"the {be.name!r} backend"
    checks = (
        (plan.group.size > 1, "distributed training (the reduction runs between steps)"),
        (o.privacy is not None, "DP-SGD (its noise is drawn per step)"),
        (plan.weights is not None, "sample or class weights"),
        (dropout.active(net), "dropout (its masks are drawn per step)"),
        (optimizer.name != "sgd", f"optimizer {optimizer.name!r} (its step depends on the "
                                  f"step count); SGD and momentum only"),
        (bool(optimizer.penalty), "an L2 penalty (computed per batch on the host)"),
        (optimizer.clips, "gradient clipping"),
        (optimizer.schedule.per_step, "a per-step learning-rate schedule"),
        (bool(plan.batches), "per-batch callbacks"),
        (not (be._is_resident(X) and be._is_resident(Y)),
         "X or Y kept on the host (too large for the device, memory-mapped or sparse)"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    return None


def graphs_for(net, optimizer, plan, data):
    """The run's :class:`StepGraphs`, made once per fit (None: eager steps)."""
    mode = plan.options.cuda_graph
    if mode is False or (mode == "auto" and getattr(net.backend, "simulated", False)):
        return None  # (the simulator: nothing to capture; True runs the graph's kernels)
    reason = why_not(net, optimizer, plan, data)
    if reason is not None:
        if mode is True:
            raise ValueError(f"cuda_graph=True: this run cannot replay CUDA graphs: "
                             f"{reason}; use cuda_graph='auto' or False")
        return None
    graphs = getattr(plan, "graphs", None)
    if graphs is None:
        graphs = plan.graphs = StepGraphs(net.backend, mode, net.dtype)
    return graphs


def train_epoch(net, optimizer, data, order, batch_size, graphs):
    """One epoch of graph steps over the rows ``order``; the figures of
    :func:`gpubp.training.loop._train_epoch` (loss, accuracy, None)."""
    X, Y = data
    be, P_total = net.backend, len(order)
    total = be.cost_sum()
    correct = be.correct_sum(net.loss_name) if net.is_classifier else 0.0
    alone = Identity(net)
    lr = optimizer.current_lr()

    def state():
        return [net.theta, *(optimizer.flat_state or {}).values(), be.cost_total,
                be.correct_total, graphs.offset]

    with graphs.epoch(be.resident(order)):
        for start in range(0, P_total, batch_size):
            P = min(batch_size, P_total - start)
            held = graphs.hold((net._activations_flat, net._deltas_flat, net.targets))
            graphs.step((P, lr, held), P, lambda index, P=P: backprop.train_step(
                net, optimizer, X, Y, index, alone, P), optimizer, state)
    accuracy = float(correct) / P_total if net.is_classifier else None
    return float(total) / P_total, accuracy, None
