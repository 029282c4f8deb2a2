"""The ``gpubp`` command line: ``train | evaluate | predict | export | bench | gradcheck | info``.

``gpubp train`` with no arguments trains a 64-64-10 sigmoid network on the bundled UCI
handwritten digits and prints the held-out test accuracy (about 0.96). ``--data`` takes
a bundled set (digits, breast_cancer, iris, wine) or a ``.csv``/``.npz`` file whose
labels may be class names. Errors are one-line messages with a non-zero exit status, not
tracebacks.

Saved models (``--save``) carry, in their JSON header, the class names and the feature
scaling of the training data, so ``evaluate``, ``predict`` and an exported ONNX model
(``export``) take raw features. Every output path is checked before any work starts.
"""

import os
import sys
import time

import numpy as np

from gpubp import losses
from gpubp.distributed import ranks as distributed
from gpubp.cli import checks, parser
from gpubp.cli.parser import build_parser
from gpubp.cli.files import (CliError, check_outputs, examples_for, load_training_data,
                             npy_data, read_model, scaled, fit_scaler)
from importlib import metadata
import json

# -- commands ------------------------------------------------------------------------------
def cmd_train(args, out):
    import gpubp  # keeps the command line's start light

    checks.check_train(args)
    lr = args.lr if args.lr is not None else parser.default_lr(args.optimizer)
    root = not args.distributed or distributed.is_root()  # one rank prints and writes
    out = out if root else open(os.devnull, "w")  # noqa: SIM115 - a sink for the other ranks
    data, scaler, X_train, X_test = _training_data(args)
    sizes = [data.n_features, *args.layers, data.n_classes]
    net = gpubp.Network(sizes, hidden=args.hidden, output="softmax", device=args.device,
                        dtype=args.dtype, seed=args.seed, dropout=args.dropout,
                        negative_slope=args.negative_slope, label_smoothing=args.label_smoothing)
    n_params = sum(w.size + b.size for w, b in zip(net.W, net.b))
    print(f"data: {data.name}, {len(data.X_train)} train / {len(data.X_test)} test examples, "
          f"{data.n_features} features, {data.n_classes} classes", file=out)
    print(f"network: {'-'.join(map(str, sizes))} ({n_params} parameters), "
          f"{parser.hidden_label(args.layers, args.hidden)}, "
          f"{f'dropout {args.dropout:g}, ' if args.dropout else ''}"
          f"device={net.device} (backend {net.backend.name}), {net.dtype.name}", file=out)
    split = args.validation_split or (0.1 if args.early_stopping else 0.0)
    validation = None if split or len(X_test) == 0 else (X_test, data.y_test)
    schedule = checks.schedule_of(args)
    clip = "" if args.clip_norm is None and args.clip_value is None else \
        f", clip {'norm' if args.clip_norm else 'value'} {args.clip_norm or args.clip_value:g}"
    print(f"optimizer: {args.optimizer}, lr {lr:g}, schedule {schedule}{clip}, batch "
          f"{args.batch_size}, {args.epochs} epochs", file=out)
    start = time.perf_counter()
    history = net.fit(X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
                      lr=lr, optimizer=args.optimizer, verbose=args.verbose,
                      validation_data=validation, validation_split=split,
                      schedule=schedule, weight_decay=args.weight_decay,
                      clip_norm=args.clip_norm, clip_value=args.clip_value,
                      early_stopping=args.early_stopping, checkpoint=args.checkpoint,
                      checkpoint_every=args.checkpoint_every, resume=args.resume,
                      gradient_flow=bool(args.plot), distributed=args.distributed,
                      class_weight=args.class_weight)
    seconds = time.perf_counter() - start
    print(f"trained {len(history)} epochs in {seconds:.2f} s; final train loss "
          f"{history['loss'][-1]:.4f}, train accuracy {history['accuracy'][-1]:.4f}", file=out)
    if history.stop_reason:
        print(f"stopped: {history.stop_reason}", file=out)
    if len(X_test):
        result = net.evaluate(X_test, data.y_test)
        print(f"test loss {result['loss']:.4f}", file=out)
        print(f"test accuracy {result['accuracy']:.4f}", file=out)
    if args.save and root:
        from gpubp.io.model import save  # keeps the command line's start light

        meta = {"classes": list(data.classes)}
        if scaler is not None:
            meta["scaler"] = {"mean": scaler[0].tolist(), "std": scaler[1].tolist()}
        save(net, args.save, inputs="raw", cli=meta)
        print(f"saved to {args.save}", file=out)
    if args.plot and root:
        history.plot(args.plot, title=f"{data.name}: {'-'.join(map(str, sizes))}")
        print(f"curves written to {args.plot}", file=out)
    return 0


def _training_data(args):
    """``(data, scaler, X_train, X_test)`` of ``gpubp train``: the data set of ``--data``
    scaled by the training rows' (mean, std), or the ``--features`` / ``--labels`` files
    unscaled (``scaler`` None)."""
    if args.features or args.labels:
        data, scaler = npy_data(args, parser.DEFAULTS["data"]), None  # scaling would copy the file
    else:
        data = load_training_data(args)
        scaler = fit_scaler(data.X_train)
    if data.n_classes < 2:
        raise CliError(f"--data must hold at least 2 classes, got {data.n_classes}")
    return data, scaler, scaled(data.X_train, scaler), scaled(data.X_test, scaler)


def cmd_evaluate(args, out):
    checks.check_input_file(args.model, "--model")
    checks.check_device(args)
    checks.check_data(args)
    model = read_model(args.model, args.device)
    net = model.net
    if not net.is_classifier:
        raise CliError(f"{args.model} is not a classifier (loss {net.loss_name!r})")
    X, y = examples_for(args, model, need_labels=True)
    result = net.evaluate(X, y)
    print(f"model: {args.model} ({'-'.join(map(str, net.sizes))}), device={net.device}", file=out)
    print(f"inputs: {model.describe_inputs()}", file=out)
    print(f"examples {len(X)}", file=out)
    print(f"loss {result['loss']:.4f}", file=out)
    print(f"accuracy {result['accuracy']:.4f}", file=out)
    return 0


def cmd_predict(args, out):
    check_outputs(args, "--output")
    checks.check_input_file(args.model, "--model")
    checks.check_device(args)
    checks.check_data(args)
    model = read_model(args.model, args.device)
    net, classes = model.net, model.classes
    X, _ = examples_for(args, model, need_labels=False)
    pred = net.predict(X)
    if net.is_classifier and pred.ndim == 1:
        lines = [classes[i] if classes is not None else str(int(i)) for i in pred]
    else:
        lines = [",".join(f"{v:.6g}" for v in np.atleast_1d(row)) for row in pred]
    text = "\n".join(lines) + "\n"
    if args.output:
        from gpubp.io.atomic import atomic_write  # keeps the command line's start light

        atomic_write(args.output, lambda f: f.write(text.encode()))
        print(f"{len(lines)} predictions written to {args.output}", file=out)
    else:
        out.write(text)
    return 0


def cmd_export(args, out):
    from gpubp.io.onnx import OPSET, to_onnx  # keeps the command line's start light

    check_outputs(args, "--onnx")
    checks.check_input_file(args.model, "--model")
    model = read_model(args.model, "cpu")
    net, classes, scaler = model.net, model.classes, model.scaler
    metadata = {"inputs": model.inputs}
    if classes is not None:
        metadata["classes"] = json.dumps(classes)
    to_onnx(net, args.onnx, scaler=scaler, metadata=metadata)
    what = {"raw": "raw features" + (", scaled inside the graph" if scaler is not None else ""),
            "standardized": "standardised features (as gpubp.datasets.load gives them; the "
                            "model stores no scaler)",
            "unknown": "features as the model was trained on them (its file does not record "
                       "whether they were standardised)"}[model.inputs]
    print(f"exported {args.model} ({'-'.join(map(str, net.sizes))}, {net.dtype.name}) to "
          f"{args.onnx} (ONNX opset {OPSET}; input 'X' (N, {net.sizes[0]}) {what}; output "
          f"'output' (N, {net.sizes[-1]}))", file=out)
    return 0


def cmd_bench(args, out):
    checks.check_bench(args)
    if args.scaling:
        from gpubp.bench.scaling import run_scaling  # keeps the command line's start light

        run_scaling(ranks=args.ranks or 2, repeats=args.repeats,
                    reduction="allreduce" if args.fused else args.reduction or "shared",
                    file=out)
        return 0
    from gpubp.bench.compare import run_bench  # keeps the command line's start light

    kwargs = {} if args.samples_per_epoch is None else {"samples_per_epoch": args.samples_per_epoch}
    if args.matrix:
        from gpubp.bench.runners import FULL, QUICK  # as above

        args.cases = list(args.cases or ()) + list(FULL if args.matrix == "full" else QUICK)
    peers = args.peer_names if args.peers and args.peer_names else args.peers
    run_bench(args.cases, args.backends, peers, args.repeats, file=out,
              inference=args.inference, processes=args.processes or 3, **kwargs)
    return 0


def _loss_options(args):
    """gradcheck's loss parameters: those that differ from their defaults (a Network refuses
    a parameter its loss does not take)."""
    given = {"label_smoothing": args.label_smoothing, "huber_delta": args.huber_delta}
    return {k: v for k, v in given.items() if v != losses.PARAMETERS[k][0]}


def cmd_gradcheck(args, out):
    import gpubp  # keeps the command line's start light

    sizes = [args.inputs, *args.layers, args.outputs]
    checks.check_negative_slope(args)
    net = gpubp.Network(sizes, hidden=args.hidden, output=args.output, loss=args.loss,
                        device=args.device, dtype="float64", seed=args.seed, backend=args.backend,
                        negative_slope=args.negative_slope, **_loss_options(args))
    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(args.examples, args.inputs))
    targets = losses.LOSSES[net.loss_name].targets
    if targets == "labels":
        Y = rng.integers(0, args.outputs, args.examples)
    elif targets == "binary":
        Y = rng.integers(0, 2, (args.examples, args.outputs)).astype(float)
    elif targets == "counts":  # a Poisson target is never negative
        Y = rng.poisson(2.0, (args.examples, args.outputs)).astype(float)
    else:
        Y = rng.normal(size=(args.examples, args.outputs))
    errors, kinks = gpubp.gradcheck(net, X, Y, atol=args.atol, rtol=args.rtol,
                                    return_kinks=True)
    print(f"network: {'-'.join(map(str, sizes))}, {parser.hidden_label(args.layers, args.hidden)}, "
          f"output={args.output}, "
          f"loss={net.loss_name}, backend {net.backend.name}, float64, {args.examples} examples",
          file=out)
    tolerance = f"atol {args.atol:g} + rtol {args.rtol:g} x gradient scale"
    for l, (err, kinked) in enumerate(zip(errors, kinks), start=1):
        skipped = (f" ({kinked} entries at a non-differentiable point of relu, where a "
                   f"central difference straddles the kink: not counted)" if kinked else "")
        print(f"layer {l}: worst error {err:.2e} x tolerance{skipped}", file=out)
    worst = float(np.max(errors))
    if worst > 1:
        raise CliError(f"gradient check failed: worst error {worst:.2e} x tolerance ({tolerance})")
    print(f"ok: worst error {worst:.2e} x tolerance ({tolerance})", file=out)
    return 0


def cmd_info(args, out):
    import numba  # keeps the command line's start light

    import gpubp  # keeps the command line's start light
    from gpubp.backends.devices import cuda_status

    usable, reason = cuda_status()
    print(f"gpubp {gpubp.__version__}", file=out)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {numba.__version__}", file=out)
    for module in ("cupy", "tqdm", "matplotlib", "sklearn"):
        try:
            mod = __import__(module)
            print(f"{module} {mod.__version__}", file=out)
        except Exception as exc:  # noqa: BLE001 - info reports, never fails
            print(f"{module} not importable ({type(exc).__name__})", file=out)

    # by their installed distributions: importing mpi4py.MPI would start MPI, onnx is slow
    for dist in ("pyarrow", "numba-cuda", "onnx", "mpi4py"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{dist} {version}", file=out)
    try:
        from gpubp.backends import get_backend  # keeps the command line's start light

        cpu = get_backend("cpu").name
    except Exception as exc:  # noqa: BLE001
        cpu = f"reference ({type(exc).__name__}: {exc})"
    print(f"cpu backend: {cpu}", file=out)
    print(f"cuda usable: {'yes' if usable else 'no'} ({reason})", file=out)
    return 0


def _rank_label(args):
    """`` (rank r of R)`` in a distributed run of several ranks, else ``""``."""
    if not getattr(args, "distributed", False) or "mpi4py.MPI" not in sys.modules:
        return ""
    n = distributed.size()
    return f" (rank {distributed.rank()} of {n})" if n > 1 else ""


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "export": cmd_export, "bench": cmd_bench, "gradcheck": cmd_gradcheck, "info": cmd_info}


def main(argv=None, out=None):
    """Entry point of the ``gpubp`` console script; returns the exit status.

    A reader that stops early (``gpubp predict ... | head``) ends the command quietly, as
    it ends standard Unix tools: no message, exit status 141 (128 + SIGPIPE).
    """
    out = out or sys.stdout
    try:
        status = _run(argv, out)
        out.flush()  # inside the try: a closed pipe shows at the flush as often as the write
        return status
    except BrokenPipeError:
        return _broken_pipe(out)


def _broken_pipe(out):
    # Python would report the failed flush of stdout at exit: point stdout at /dev/null
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return 141
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return 141


def _run(argv, out):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, out)
    except BrokenPipeError:
        raise
    except (CliError, ValueError, TypeError, OSError, RuntimeError, ImportError,
            ArithmeticError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        where = _rank_label(args)
        print(f"gpubp {args.command}: error{where}: {message}", file=sys.stderr)
        if where:  # the other ranks may wait in a collective: end them all
            sys.stderr.flush()
            distributed.world().Abort(1)
        return 1
    except KeyboardInterrupt:
        print(f"gpubp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
