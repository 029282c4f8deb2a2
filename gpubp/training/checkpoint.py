"""Training checkpoints: everything :func:`gpubp.training.loop.fit` needs to resume exactly.

A checkpoint is a gpubp model file (so ``gpubp.load("run.npz")`` reads it as a network)
whose JSON header also carries a ``"checkpoint"`` entry, and whose extra arrays hold the
optimizer's buffers and the bookkeeping of the run:

=====================  ================================================================
header ``checkpoint``  ``epoch`` (last finished, 0-based), ``iterations``, ``optimizer``
                       (config), ``rng`` (the network generator's bit-generator state),
                       ``history``, ``callbacks`` (JSON state), ``batch_size``,
                       ``shuffle``, ``n_examples``, ``stopped``
``opt.<key>.<i>``      optimizer state (``velocity``, ``m``, ``v``) of parameter ``i``
``order``              the shuffling permutation as it stands (shuffled in place each epoch)
``split``              the permutation behind ``validation_split``, when one was used
``cb<k>.<name>``       arrays of callback ``k`` (e.g. early stopping's best parameters)
=====================  ================================================================

Files are written with :func:`gpubp.io.atomic.atomic_savez` (temporary file, fsync, rename), so
an interruption while saving leaves the previous checkpoint intact.
"""

from dataclasses import dataclass, field

import numpy as np

from gpubp import losses
from gpubp.training.history import History
from gpubp.io.model import check_parameters, model_arrays, read_npz
from gpubp.io.atomic import atomic_savez

CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint (host arrays). See the module docstring for the fields."""

    path: str
    model: dict  # the model part of the header: sizes, hidden, output, loss, dtype, dropout
    epoch: int
    iterations: int
    optimizer: dict
    rng: dict
    history: History
    batch_size: int
    shuffle: bool
    n_examples: int
    stopped: bool
    W: list
    b: list
    optimizer_state: dict
    order: np.ndarray
    split: object = None
    callbacks: list = field(default_factory=list)  # [(class name, config, arrays)]


def save(path, net, plan, epoch, stopped=False):
    """Write a checkpoint of a run after its 0-based ``epoch``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    net : Network
    plan : gpubp.training.loop.Plan
        The run: its optimizer, the shuffling permutation after ``epoch``, the history,
        the batch size, shuffling, the training examples (after any validation split),
        the permutation of the validation split and the callbacks.
    epoch : int
        The last finished epoch.
    stopped : bool
        Whether a callback or ``tol`` ended the run at this epoch.
    """
    optimizer, history, callbacks, split = plan.optimizer, plan.history, plan.callbacks, \
        plan.split
    order, batch_size, shuffle = plan.order, plan.options.batch_size, plan.options.shuffle
    n_examples = len(plan.order)
    cb_configs, extra = [], {}
    for k, cb in enumerate(callbacks):
        state = cb.state_dict()
        if state is None:
            continue
        config, arrays = state
        cb_configs.append({"index": k, "class": type(cb).__name__, "config": config})
        extra.update({f"cb{k}.{name}": np.asarray(a) for name, a in arrays.items()})
    info = {"version": CHECKPOINT_VERSION, "epoch": int(epoch),
            "iterations": int(optimizer.iterations), "optimizer": optimizer.get_config(),
            "rng": net.rng.bit_generator.state, "history": history.to_dict(),
            "callbacks": cb_configs, "batch_size": int(batch_size), "shuffle": bool(shuffle),
            "n_examples": int(n_examples), "stopped": bool(stopped)}
    arrays = model_arrays(net, checkpoint=info)
    arrays.update({f"opt.{k}": v for k, v in optimizer.state_arrays(net.backend).items()})
    arrays["order"] = np.asarray(order, dtype=np.int64)
    if split is not None:
        arrays["split"] = np.asarray(split, dtype=np.int64)
    arrays.update(extra)
    atomic_savez(path, arrays)


def load(path):
    """Read a checkpoint written by :func:`save`.

    Raises
    ------
    FileNotFoundError
    ValueError
        When ``path`` is not a gpubp checkpoint (a plain model file, say) or is corrupt.
    """
    header, arrays = read_npz(path)
    info = header.get("checkpoint")
    if not isinstance(info, dict):
        raise ValueError(f"{path} is a gpubp model file but not a training checkpoint "  # noqa: TRY004 - a file, not an argument
                         f"(no checkpoint state); resume needs a file written by "
                         f"fit(checkpoint=...)")
    if info.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {info.get('version')!r}; this gpubp "
                         f"reads version {CHECKPOINT_VERSION}")
    sizes, W, b = check_parameters(path, header, arrays)
    try:
        callbacks = []
        for entry in info["callbacks"]:
            prefix = f"cb{entry['index']}."
            cb_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            callbacks.append((str(entry["class"]), entry["config"], cb_arrays))
        ckpt = Checkpoint(
            path=str(path),
            model={**{k: header[k] for k in ("sizes", "hidden", "output", "loss", "dtype")},
                   "dropout": header.get("dropout", [0.0] * (len(sizes) - 2)),
                   "negative_slope": header.get("negative_slope"),  # leaky_relu's
                   # label_smoothing / huber_delta: files without one had the default
                   **{k: header.get(k, default)
                      for k, (default, _) in losses.PARAMETERS.items()}},
            epoch=_count(info["epoch"]), iterations=_count(info["iterations"]),
            optimizer=dict(info["optimizer"]), rng=dict(info["rng"]),
            history=History.from_dict(info["history"]), batch_size=_count(info["batch_size"]),
            shuffle=bool(info["shuffle"]), n_examples=_count(info["n_examples"]),
            stopped=bool(info["stopped"]), W=W, b=b,
            optimizer_state={k[4:]: v for k, v in arrays.items() if k.startswith("opt.")},
            order=arrays["order"], split=arrays.get("split"), callbacks=callbacks)
        _check_state(ckpt, [a.shape for pair in zip(W, b) for a in pair])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise ValueError(f"{path} is a corrupt checkpoint ({type(exc).__name__}: {exc})") from None
    return ckpt


def _count(value):
    """A non-negative integer from the JSON header (``bool`` and floats refused)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _is_permutation(arr, n):
    return (arr.ndim == 1 and arr.dtype.kind in "iu" and arr.shape[0] == n
            and np.array_equal(np.sort(arr), np.arange(n)))


def _check_state(ckpt, shapes):
    """Everything :func:`restore` and the resumed loop will use, checked up front.

    ``shapes`` are those of ``[W^1, b^1, W^2, ...]``: each optimizer buffer ``key.i`` must
    have the shape of parameter ``i`` and be finite; the shuffling order must be a
    permutation of the examples; the generator state must be one NumPy accepts.
    """
    if ckpt.batch_size < 1 or ckpt.epoch + 1 < len(ckpt.history):
        raise ValueError(f"inconsistent bookkeeping (batch_size {ckpt.batch_size}, epoch "
                         f"{ckpt.epoch}, {len(ckpt.history)} history entries)")
    for key, arr in ckpt.optimizer_state.items():
        name, _, index = key.rpartition(".")
        if not (name and index.isdigit() and int(index) < len(shapes)):
            raise ValueError(f"unexpected optimizer state array {key!r}")
        if arr.shape != shapes[int(index)] or arr.dtype.kind != "f" or \
                not np.isfinite(arr).all():
            raise ValueError(f"optimizer state {key!r} must be a finite float array of "
                             f"shape {shapes[int(index)]}, got {arr.dtype} {arr.shape}")
    if not _is_permutation(ckpt.order, ckpt.n_examples):
        raise ValueError(f"'order' must be a permutation of the {ckpt.n_examples} training "
                         f"examples, got {ckpt.order.dtype} {ckpt.order.shape}")
    if ckpt.split is not None and not _is_permutation(ckpt.split, ckpt.split.shape[0] if
                                                      ckpt.split.ndim == 1 else -1):
        raise ValueError(f"'split' must be a permutation, got {ckpt.split.dtype} "
                         f"{ckpt.split.shape}")
    if ckpt.split is not None and ckpt.split.shape[0] <= ckpt.n_examples:
        raise ValueError(f"'split' must cover more than the {ckpt.n_examples} training "
                         f"examples, got {ckpt.split.shape[0]}")
    for cls, _, arrays in ckpt.callbacks:  # e.g. early stopping's best parameters
        for key, arr in arrays.items():
            kind, index = key[:1], key[1:]
            if kind in "Wb" and index.isdigit() and int(index) < len(shapes) // 2:
                want = shapes[2 * int(index) + (kind == "b")]
                if arr.shape != want or not np.isfinite(arr).all():
                    raise ValueError(f"{cls} state {key!r} must be finite with shape {want}, "
                                     f"got {arr.shape}")
    np.random.default_rng().bit_generator.state = ckpt.rng  # raises if NumPy refuses it


def check_compatible(ckpt, net, optimizer, batch_size, shuffle, n_examples):
    """Raise ``ValueError`` unless the run being resumed is the one ``ckpt`` recorded."""
    model = {"sizes": net.sizes, "hidden": net.hidden, "output": net.output,
             "loss": net.loss_name, "dtype": net.dtype.name, "dropout": net.dropout}
    if net.negative_slope is not None:  # leaky_relu's (older checkpoints have none)
        model["negative_slope"] = net.negative_slope
    # a different smoothing or Huber δ is another loss: resuming would mix two runs
    model.update(losses.keywords(net.loss_name, net.loss_param))
    for key, ours in model.items():
        theirs = ckpt.model.get(key)
        if key == "hidden" and len(net.sizes) == 2:
            continue  # no hidden layer: nothing to compare
        if theirs != ours:
            raise ValueError(f"resume: the network's {key} must match the checkpoint's "
                             f"({theirs!r}), got {ours!r} (checkpoint {ckpt.path})")
    ours = optimizer.get_config()
    if ours != ckpt.optimizer:
        raise ValueError(f"resume: optimizer must match the checkpoint's ({ckpt.optimizer}), "
                         f"got {ours} (checkpoint {ckpt.path})")
    for name, theirs, given in (("batch_size", ckpt.batch_size, batch_size),
                                ("shuffle", ckpt.shuffle, shuffle),
                                ("the number of training examples", ckpt.n_examples, n_examples)):
        if theirs != given:
            raise ValueError(f"resume: {name} must match the checkpoint's ({theirs!r}), "
                             f"got {given!r} (checkpoint {ckpt.path})")


def restore(ckpt, net, optimizer, callbacks):
    """Put the parameters, optimizer state, generator state and callback state back."""
    net.set_params(ckpt.W, ckpt.b)
    optimizer.load_state(net.backend, net.params, ckpt.iterations, ckpt.optimizer_state)
    net.rng.bit_generator.state = ckpt.rng
    by_index = {i: cb for i, cb in enumerate(callbacks) if cb.state_dict() is not None}
    stateful = list(by_index.values())
    if len(stateful) != len(ckpt.callbacks):
        raise ValueError(f"resume: the checkpoint holds the state of {len(ckpt.callbacks)} "
                         f"stateful callback(s) {[c[0] for c in ckpt.callbacks]}, this run has "
                         f"{len(stateful)} {[type(c).__name__ for c in stateful]} "
                         f"(checkpoint {ckpt.path})")
    for cb, (cls, config, arrays) in zip(stateful, ckpt.callbacks):
        if type(cb).__name__ != cls:
            raise ValueError(f"resume: callback {type(cb).__name__} must match the "
                             f"checkpoint's {cls} (checkpoint {ckpt.path})")
        try:
            cb.load_state_dict(config, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{ckpt.path} holds a corrupt {cls} state ({type(exc).__name__}: "
                             f"{exc})") from None
