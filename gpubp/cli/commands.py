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

import argparse
import math
import os
import sys
import time

import numpy as np

from gpubp import activations, losses
from gpubp.distributed import ranks as distributed
from gpubp.distributed.reductions import HOST_REDUCTIONS, REDUCTIONS
from gpubp.cli.files import (CliError, _check_outputs, _examples_for, _load_training_data,
                             _npy_data, _read_model, _scaled, _scaler)

DEFAULTS = {"data": "digits", "layers": "64", "hidden": "sigmoid", "optimizer": "sgd",
            "lr": 0.5, "epochs": 30, "batch_size": 32, "device": None, "seed": 0}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``gpubp train: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _layers(text):
    """Hidden widths from ``"64"``/``"128,64"``; ``"none"`` is no hidden layer."""
    if text.strip().lower() == "none":
        return []
    pieces = text.split(",")
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive widths (e.g. 64 or 128,64), or none for no "
            f"hidden layer, got {text!r}")
    for k, piece in enumerate(pieces, start=1):
        if not piece.strip():
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive widths (e.g. 64 or 128,64), got {text!r} "
                f"(width {k} of {len(pieces)} is empty)")
    try:
        sizes = [int(s) for s in pieces]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers (e.g. 64 or 128,64), got {text!r}")
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return sizes


def _hidden_label(layers, hidden):
    return f"hidden={hidden}" if layers else "no hidden layer"


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def _number(low, high=math.inf, low_open=False, high_open=False, kind=float):
    """A finite number in a range; the error names the range and what was given."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    span = (f">= {low:g}" if not low_open else f"> {low:g}") if high == math.inf \
        else f"in {left}{low:g}, {high:g}{right}"
    what = "an integer" if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}")
        inside = (value > low if low_open else value >= low) and \
                 (value < high if high_open else value <= high)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}")
        return value
    return parse


def _seed(text):
    return _number(0, kind=int)(text)


def _add_data(p, what):
    p.add_argument("--data", default=DEFAULTS["data"],
                   help=f"{what}: digits, breast_cancer, iris, wine (their held-out test "
                        f"split), or a .csv/.npz file (default digits)")
    p.add_argument("--label-column", default=None,
                   help="label column of a CSV file, index or header name (default the last)")
    p.add_argument("--test-size", type=_number(0, 1, True, True), default=0.25,
                   help="fraction of a data set held out for testing (default 0.25)")
    p.add_argument("--seed", type=_seed, default=DEFAULTS["seed"])


def _add_device(p):
    p.add_argument("--device", default=DEFAULTS["device"],
                   help="cpu, cuda or auto (default $GPUBP_DEVICE or cpu)")


def _version():
    from gpubp.version import __version__

    return __version__


def build_parser():
    parser = _Parser(prog="gpubp", description="gpubp: fully connected networks trained by "
                     "explicit backpropagation, on a CUDA GPU or the CPU.")
    parser.add_argument("--version", action="version", version=f"gpubp {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a network and report its test accuracy")
    _add_data(train, "training data")
    train.add_argument("--layers", type=_layers, default=_layers(DEFAULTS["layers"]),
                       help="hidden layer widths, comma-separated, or none for no hidden layer "
                            "(default 64)")
    train.add_argument("--hidden", default=DEFAULTS["hidden"],
                       help=f"hidden activation: {', '.join(activations.HIDDEN)} "
                            f"(default {DEFAULTS['hidden']})")
    train.add_argument("--optimizer", default=DEFAULTS["optimizer"],
                       help="sgd, momentum, nesterov or adam (default sgd)")
    train.add_argument("--lr", type=_positive(float), default=None,
                       help="learning rate (default 0.5 for sgd, momentum and nesterov, "
                            "1e-3 for adam)")
    train.add_argument("--weight-decay", type=_number(0), default=0.0, help="L2 penalty (default 0)")
    train.add_argument("--schedule", default="constant",
                       help="learning-rate schedule: constant, step or cosine")
    train.add_argument("--epochs", type=_positive(int), default=DEFAULTS["epochs"])
    train.add_argument("--batch-size", type=_positive(int), default=DEFAULTS["batch_size"])
    train.add_argument("--validation-split", type=_number(0, 1, high_open=True), default=0.0,
                       help="fraction of the training data held out for validation (default: "
                            "the test split is shown as validation, and never used to stop)")
    train.add_argument("--early-stopping", type=_positive(int), default=None, metavar="PATIENCE",
                       help="stop when val_loss has not improved for PATIENCE epochs and keep "
                            "the best parameters (uses --validation-split, 0.1 if unset)")
    _add_device(train)
    train.add_argument("--dtype", default="float32", help="float32 or float64")
    train.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    train.add_argument("--plot", metavar="PATH",
                       help="write loss/accuracy curves and the per-layer gradient flow (PNG)")
    train.add_argument("--checkpoint", metavar="PATH", help="checkpoint file for the run (.npz)")
    train.add_argument("--checkpoint-every", type=_positive(int), default=1, metavar="N")
    train.add_argument("--resume", metavar="PATH", help="resume the run of this checkpoint")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                       help="0 quiet, 1 progress bar (only on a terminal), 2 a line per epoch")
    train.add_argument("--features", metavar="X.npy",
                       help="features, a .npy file (P, n_0) memory-mapped (never read whole) "
                            "and used as given (not standardised); with --labels, not --data")
    train.add_argument("--labels", metavar="y.npy", help="class labels 0..K-1, a .npy (P,)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI: `mpiexec -n R gpubp train --distributed "
                            "...`; rank 0 prints and writes the files (needs gpubp[mpi])")

    evaluate = commands.add_parser("evaluate", help="loss and accuracy of a saved model")
    evaluate.add_argument("--model", required=True, metavar="PATH", help="model saved by train")
    _add_data(evaluate, "evaluation data (a file is used whole)")
    _add_device(evaluate)

    predict = commands.add_parser("predict", help="predicted labels of a saved model")
    predict.add_argument("--model", required=True, metavar="PATH", help="model saved by train")
    _add_data(predict, "inputs (a file may omit its label column)")
    predict.add_argument("--output", metavar="PATH", help="write the labels there, one per line")
    _add_device(predict)

    export = commands.add_parser("export", help="write a saved model as ONNX")
    export.add_argument("--model", required=True, metavar="PATH", help="model saved by train")
    export.add_argument("--onnx", required=True, metavar="PATH", help="ONNX file to write")

    bench = commands.add_parser("bench", help="training throughput of the backends")
    bench.add_argument("--case", action="append", dest="cases", metavar="SIZES@BATCH",
                       help="e.g. 784-128-10@64 (repeatable; default the standard cases)")
    bench.add_argument("--backend", action="append", dest="backends",
                       help="reference, cpu or cuda (repeatable; default those usable)")
    bench.add_argument("--no-peers", action="store_false", dest="peers",
                       help="do not time JAX and PyTorch")
    bench.add_argument("--repeats", type=_positive(int), default=5,
                       help="timed epochs per runner (the best is reported)")
    bench.add_argument("--samples-per-epoch", type=_positive(int), default=None)
    bench.add_argument("--processes", type=_positive(int), default=None,
                       help="fresh processes per runner, one after another (default 3)")
    bench.add_argument("--inference", action="store_true", help="also time forward passes")
    bench.add_argument("--scaling", action="store_true",
                       help="data-parallel scaling instead: 784-1024-1024-10 @ 512, 1 rank x "
                            "1 BLAS thread, R ranks x 1, 1 rank x R (needs gpubp[mpi])")
    bench.add_argument("--ranks", type=_positive(int), default=None,
                       help="R of --scaling (default 2)")
    bench.add_argument("--reduction",
                       choices=HOST_REDUCTIONS, default=None,
                       help="--scaling: how the ranks combine their work: " + "; ".join(
                           f"{name}: {REDUCTIONS[name]}" for name in HOST_REDUCTIONS)
                       + " (default shared)")
    bench.add_argument("--fused", action="store_true",
                       help="--scaling: one Allreduce per step (--reduction allreduce)")

    grad = commands.add_parser("gradcheck", help="backpropagation vs central differences")
    grad.add_argument("--layers", type=_layers, default=[5, 4], help="hidden widths (default 5,4)")
    grad.add_argument("--hidden", default="sigmoid", help=", ".join(activations.HIDDEN))
    grad.add_argument("--output", default="softmax", help=", ".join(activations.OUTPUT))
    grad.add_argument("--loss", default=None, help=", ".join(losses.NAMES) + " (default: the "
                      "output's canonical loss, else mse)")
    grad.add_argument("--inputs", type=_positive(int), default=6)
    grad.add_argument("--outputs", type=_positive(int), default=3)
    grad.add_argument("--examples", type=_positive(int), default=8)
    grad.add_argument("--backend", default=None, help="reference, cpu or cuda")
    _add_device(grad)
    grad.add_argument("--seed", type=_seed, default=0)
    # gpubp.core.gradcheck's tolerances (PyTorch's criterion): |g - ĝ| <= atol + rtol * scale
    grad.add_argument("--atol", type=_number(0), default=1e-8,
                      help="absolute tolerance, the floor for vanishing gradients (default 1e-8)")
    grad.add_argument("--rtol", type=_number(0), default=1e-6,
                      help="tolerance relative to each layer's gradient scale (default 1e-6)")

    commands.add_parser("info", help="versions, devices found and why a GPU is or is not usable")
    return parser


# -- argument checks, all before any data are read --------------------------------------
def _one_of(args, option, allowed, lower=False):
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    if value is None:
        return
    if (value.lower() if lower else value) not in allowed:
        raise CliError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def _check_device(args):
    from gpubp.backends.devices import DEVICES

    _one_of(args, "--device", DEVICES)


def _check_data(args):
    """``--data``: a bundled set or an existing file; ``--label-column`` only with a file."""
    from gpubp import datasets

    if args.data in datasets.NAMES:
        if args.label_column is not None:
            raise CliError(f"--label-column applies to a data file, not to the bundled set "
                           f"{args.data!r} (got --label-column {args.label_column!r})")
        return
    if not os.path.exists(args.data):
        raise CliError(f"--data must be one of {', '.join(datasets.NAMES)} or an existing "
                       f".csv/.parquet/.feather/.npz file, got {args.data!r} (no such data "
                       f"set or file)")
    if os.path.isdir(args.data):
        raise CliError(f"--data must be a file, got {args.data!r}, which is a directory")


def _check_input_file(path, option):
    if path is not None and not os.path.isfile(path):
        why = "a directory" if os.path.isdir(path) else "no such file"
        raise CliError(f"{option} must be an existing file, got {path!r} ({why})")


def _check_train(args):
    from gpubp.activations import HIDDEN
    from gpubp.optim.schedules import SCHEDULES

    _check_outputs(args, "--save", "--plot", "--checkpoint")
    _one_of(args, "--optimizer", ("sgd", "momentum", "nesterov", "adam"))
    _one_of(args, "--hidden", HIDDEN)
    _one_of(args, "--schedule", tuple(SCHEDULES), lower=True)
    _one_of(args, "--dtype", ("float32", "float64"))
    _check_device(args)
    _check_input_file(args.resume, "--resume")
    if args.features or args.labels:
        if args.label_column is not None:
            raise CliError("--label-column applies to --data files, not to --features/--labels")
        _check_input_file(args.features, "--features")
        _check_input_file(args.labels, "--labels")
    else:
        _check_data(args)
    if args.distributed:
        try:
            import mpi4py  # noqa: F401 - the package alone: MPI is initialised later
        except ImportError:
            raise CliError(f"--distributed: {distributed.MPI_HINT}") from None


# -- commands ------------------------------------------------------------------------------
def cmd_train(args, out):
    import gpubp

    _check_train(args)
    lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else DEFAULTS["lr"])
    root = not args.distributed or distributed.is_root()  # one rank prints and writes
    out = out if root else open(os.devnull, "w")  # noqa: SIM115 - a sink for the other ranks
    if args.features or args.labels:
        data, scaler = _npy_data(args, DEFAULTS["data"]), None  # scaling would copy the file
    else:
        data = _load_training_data(args)
        scaler = _scaler(data.X_train)
    if data.n_classes < 2:
        raise CliError(f"--data must hold at least 2 classes, got {data.n_classes}")
    X_train, X_test = _scaled(data.X_train, scaler), _scaled(data.X_test, scaler)
    sizes = [data.n_features, *args.layers, data.n_classes]
    net = gpubp.Network(sizes, hidden=args.hidden, output="softmax", device=args.device,
                        dtype=args.dtype, seed=args.seed)
    n_params = sum(w.size + b.size for w, b in zip(net.W, net.b))
    print(f"data: {data.name}, {len(data.X_train)} train / {len(data.X_test)} test examples, "
          f"{data.n_features} features, {data.n_classes} classes", file=out)
    print(f"network: {'-'.join(map(str, sizes))} ({n_params} parameters), "
          f"{_hidden_label(args.layers, args.hidden)}, "
          f"device={net.device} (backend {net.backend.name}), {net.dtype.name}", file=out)
    split = args.validation_split or (0.1 if args.early_stopping else 0.0)
    validation = None if split or len(X_test) == 0 else (X_test, data.y_test)
    print(f"optimizer: {args.optimizer}, lr {lr:g}, schedule {args.schedule}, batch "
          f"{args.batch_size}, {args.epochs} epochs", file=out)
    start = time.perf_counter()
    history = net.fit(X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
                      lr=lr, optimizer=args.optimizer, verbose=args.verbose,
                      validation_data=validation, validation_split=split,
                      schedule=args.schedule, weight_decay=args.weight_decay,
                      early_stopping=args.early_stopping, checkpoint=args.checkpoint,
                      checkpoint_every=args.checkpoint_every, resume=args.resume,
                      gradient_flow=bool(args.plot), distributed=args.distributed)
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
        from gpubp.io.model import save

        meta = {"classes": list(data.classes)}
        if scaler is not None:
            meta["scaler"] = {"mean": scaler[0].tolist(), "std": scaler[1].tolist()}
        save(net, args.save, inputs="raw", cli=meta)
        print(f"saved to {args.save}", file=out)
    if args.plot and root:
        history.plot(args.plot, title=f"{data.name}: {'-'.join(map(str, sizes))}")
        print(f"curves written to {args.plot}", file=out)
    return 0


def cmd_evaluate(args, out):
    _check_input_file(args.model, "--model")
    _check_device(args)
    _check_data(args)
    model = _read_model(args.model, args.device)
    net = model.net
    if not net.is_classifier:
        raise CliError(f"{args.model} is not a classifier (loss {net.loss_name!r})")
    X, y = _examples_for(args, model, need_labels=True)
    result = net.evaluate(X, y)
    print(f"model: {args.model} ({'-'.join(map(str, net.sizes))}), device={net.device}", file=out)
    print(f"inputs: {model.describe_inputs()}", file=out)
    print(f"examples {len(X)}", file=out)
    print(f"loss {result['loss']:.4f}", file=out)
    print(f"accuracy {result['accuracy']:.4f}", file=out)
    return 0


def cmd_predict(args, out):
    _check_outputs(args, "--output")
    _check_input_file(args.model, "--model")
    _check_device(args)
    _check_data(args)
    model = _read_model(args.model, args.device)
    net, classes = model.net, model.classes
    X, _ = _examples_for(args, model, need_labels=False)
    pred = net.predict(X)
    if net.is_classifier and pred.ndim == 1:
        lines = [classes[i] if classes is not None else str(int(i)) for i in pred]
    else:
        lines = [",".join(f"{v:.6g}" for v in np.atleast_1d(row)) for row in pred]
    text = "\n".join(lines) + "\n"
    if args.output:
        from gpubp.io.atomic import atomic_write

        atomic_write(args.output, lambda f: f.write(text.encode()))
        print(f"{len(lines)} predictions written to {args.output}", file=out)
    else:
        out.write(text)
    return 0


def cmd_export(args, out):
    import json

    from gpubp.io.onnx import OPSET, to_onnx

    _check_outputs(args, "--onnx")
    _check_input_file(args.model, "--model")
    model = _read_model(args.model, "cpu")
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


def _check_bench(args):
    from gpubp.bench.runners import BACKEND_RUNNERS, parse_case

    for text in args.cases or ():
        try:
            parse_case(text)
        except ValueError as exc:
            raise CliError(f"--case: {exc}") from None
    for name in args.backends or ():
        if name not in BACKEND_RUNNERS:
            raise CliError(f"--backend must be one of {', '.join(BACKEND_RUNNERS)}, got {name!r}")
    scaling_only = {"--ranks": args.ranks, "--reduction": args.reduction,
                    "--fused": args.fused or None}
    others = {"--case": args.cases, "--backend": args.backends, "--inference": args.inference
              or None, "--no-peers": None if args.peers else True,
              "--samples-per-epoch": args.samples_per_epoch, "--processes": args.processes}
    if args.scaling:
        given = [k for k, v in others.items() if v is not None]
        if given:
            raise CliError(f"{given[0]} does not apply to --scaling (which times "
                           f"784-1024-1024-10 @ 512 over MPI ranks)")
        if args.fused and args.reduction not in (None, "allreduce"):
            raise CliError(f"--fused is an allreduce (one per step), got --reduction "
                           f"{args.reduction}")
    else:
        given = [k for k, v in scaling_only.items() if v is not None]
        if given:
            raise CliError(f"{given[0]} applies only with --scaling")


def cmd_bench(args, out):
    _check_bench(args)
    if args.scaling:
        from gpubp.bench.scaling import run_scaling

        run_scaling(ranks=args.ranks or 2, repeats=args.repeats,
                    reduction="allreduce" if args.fused else args.reduction or "shared",
                    file=out)
        return 0
    from gpubp.bench.compare import run_bench

    kwargs = {} if args.samples_per_epoch is None else {"samples_per_epoch": args.samples_per_epoch}
    run_bench(args.cases, args.backends, args.peers, args.repeats, file=out,
              inference=args.inference, processes=args.processes or 3, **kwargs)
    return 0


def cmd_gradcheck(args, out):
    import gpubp

    sizes = [args.inputs, *args.layers, args.outputs]
    net = gpubp.Network(sizes, hidden=args.hidden, output=args.output, loss=args.loss,
                        device=args.device, dtype="float64", seed=args.seed, backend=args.backend)
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
    print(f"network: {'-'.join(map(str, sizes))}, {_hidden_label(args.layers, args.hidden)}, "
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
    import numba

    import gpubp
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
    from importlib import metadata

    # by their installed distributions: importing mpi4py.MPI would start MPI, onnx is slow
    for dist in ("pyarrow", "numba-cuda", "onnx", "mpi4py"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{dist} {version}", file=out)
    try:
        from gpubp.backends import get_backend

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
