"""The ``gpubp`` command line's parser: its options, their types and defaults.

Argument types refuse bad values with one line naming the option (argparse's exit
status 2); the checks that need more than one option, or the file system, are
:mod:`gpubp.cli.checks`.
"""

import argparse
import math

from gpubp import activations, losses
from gpubp.distributed.reductions import HOST_REDUCTIONS, REDUCTIONS
from gpubp.version import __version__

DEFAULTS = {"data": "digits", "layers": "64", "hidden": "sigmoid", "optimizer": "sgd",
            "lr": 0.5, "epochs": 30, "batch_size": 32, "device": None, "seed": 0}


def default_lr(optimizer):
    """``--lr`` when not given: each optimizer's usual rate (PyTorch's for the adaptive ones)."""
    return {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-2}.get(optimizer, DEFAULTS["lr"])


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``gpubp train: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def layers(text):
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


def hidden_label(layers, hidden):
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


def build_parser():
    parser = Parser(prog="gpubp", description="gpubp: fully connected networks trained by "
                    "explicit backpropagation, on a CUDA GPU or the CPU.")
    parser.add_argument("--version", action="version", version=f"gpubp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(commands)
    _add_model_commands(commands)
    _add_bench(commands)
    _add_gradcheck(commands)
    commands.add_parser("info", help="versions, devices found and why a GPU is or is not usable")
    return parser


def _add_train(commands):
    train = commands.add_parser("train", help="train a network and report its test accuracy")
    _add_data(train, "training data")
    train.add_argument("--layers", type=layers, default=layers(DEFAULTS["layers"]),
                       help="hidden layer widths, comma-separated, or none for no hidden layer "
                            "(default 64)")
    train.add_argument("--hidden", default=DEFAULTS["hidden"],
                       help=f"hidden activation: {', '.join(activations.HIDDEN)} "
                            f"(default {DEFAULTS['hidden']})")
    train.add_argument("--dropout", type=_number(0, 1, high_open=True), default=0.0,
                       help="dropout rate of every hidden layer in training, in [0, 1) "
                            "(default 0)")
    _add_negative_slope(train)
    train.add_argument("--optimizer", default=DEFAULTS["optimizer"],
                       help="sgd, momentum, nesterov, adam, adamw or rmsprop (default sgd)")
    train.add_argument("--lr", type=_positive(float), default=None,
                       help="learning rate (default 0.5 for sgd, momentum and nesterov, "
                            "1e-3 for adam and adamw, 1e-2 for rmsprop)")
    train.add_argument("--weight-decay", type=_number(0), default=0.0, help="L2 penalty (default 0)")
    train.add_argument("--label-smoothing", type=_number(0, 1, high_open=True), default=0.0,
                       help="cross-entropy label smoothing ε in [0, 1) (PyTorch's; default 0)")
    train.add_argument("--class-weight", choices=("balanced",), default=None,
                       help="balanced: weigh each class by P / (K n_k) (scikit-learn's)")
    train.add_argument("--schedule", default="constant",
                       help="learning-rate schedule: constant, step or cosine (per epoch); "
                            "warmup, warmup_cosine or one_cycle (per step)")
    train.add_argument("--warmup", type=_positive(int), default=None, metavar="STEPS",
                       help="linear warm-up over the first STEPS steps, then the --schedule "
                            "(constant, or cosine: warm-up + cosine per step)")
    train.add_argument("--clip-norm", type=_positive(float), default=None, metavar="C",
                       help="clip each step's gradient to a global 2-norm of at most C")
    train.add_argument("--clip-value", type=_positive(float), default=None, metavar="V",
                       help="clip each entry of each step's gradient to [-V, V]")
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


def _add_model_commands(commands):
    """evaluate, predict and export: the commands that read a saved model."""
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


def _add_bench(commands):
    bench = commands.add_parser("bench", help="training throughput of the backends")
    bench.add_argument("--case", action="append", dest="cases", metavar="SIZES@BATCH",
                       help="e.g. 784-128-10@64 (repeatable; default the standard cases)")
    bench.add_argument("--backend", action="append", dest="backends",
                       help="reference, cpu or cuda (repeatable; default those usable)")
    bench.add_argument("--matrix", choices=("quick", "full"), default=None,
                       help="quick: 5 cases of issue 20 (~10 min with peers); full: every "
                            "size x activation x optimizer x dtype (193 cases, hours)")
    bench.add_argument("--peer", action="append", dest="peer_names", metavar="NAME",
                       help="time only these peers (repeatable): jax-scan, jax-jit, "
                            "jax-jit-nodonate, torch-eager, torch-compile")
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


def _add_negative_slope(command):
    command.add_argument("--negative-slope", type=_number(0), default=None,
                         help=f"--hidden leaky_relu: its slope for z < 0 (default "
                              f"{activations.NEGATIVE_SLOPE:g}, PyTorch's)")


def _add_gradcheck(commands):
    grad = commands.add_parser("gradcheck", help="backpropagation vs central differences")
    grad.add_argument("--layers", type=layers, default=[5, 4], help="hidden widths (default 5,4)")
    grad.add_argument("--hidden", default="sigmoid", help=", ".join(activations.HIDDEN))
    _add_negative_slope(grad)
    grad.add_argument("--output", default="softmax", help=", ".join(activations.OUTPUT))
    grad.add_argument("--loss", default=None, help=", ".join(losses.NAMES) + " (default: the "
                      "output's canonical loss, else mse)")
    grad.add_argument("--label-smoothing", type=_number(0, 1, high_open=True), default=0.0,
                      help="label smoothing of the log-losses (default 0)")
    grad.add_argument("--huber-delta", type=_number(0, low_open=True), default=1.0,
                      help="δ of the huber loss (default 1)")
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
