"""The ``gpubp`` command line: ``gpubp train | info``.

``gpubp train`` with no arguments trains a 64-64-10 sigmoid network on the bundled UCI
handwritten digits and prints the held-out test accuracy. Errors are one-line messages
with a non-zero exit status, not tracebacks.
"""

import argparse
import sys
import time

import numpy as np

DEFAULTS = {"data": "digits", "layers": "64", "hidden": "sigmoid", "optimizer": "sgd",
            "lr": 0.5, "epochs": 30, "batch_size": 32, "device": None, "seed": 0}


def _layers(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers must be comma-separated integers, got {text!r}")
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"--layers must hold positive widths, got {text!r}")
    return sizes


def build_parser():
    parser = argparse.ArgumentParser(prog="gpubp", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on a bundled data set and report test accuracy")
    train.add_argument("--data", default=DEFAULTS["data"],
                       help="bundled data set: digits, breast_cancer, iris or wine (default digits)")
    train.add_argument("--layers", type=_layers, default=_layers(DEFAULTS["layers"]),
                       help="hidden layer widths, comma-separated (default 64)")
    train.add_argument("--hidden", default=DEFAULTS["hidden"], help="hidden activation (default sigmoid)")
    train.add_argument("--optimizer", default=DEFAULTS["optimizer"], help="sgd or adam (default sgd)")
    train.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default 0.5)")
    train.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    train.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    train.add_argument("--device", default=DEFAULTS["device"], help="cpu, cuda or auto (default $GPUBP_DEVICE or cpu)")
    train.add_argument("--dtype", default="float32")
    train.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    train.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))

    commands.add_parser("info", help="versions and the devices found")
    return parser


def cmd_train(args, out):
    import gpubp
    from gpubp import datasets

    data = datasets.load(args.data, seed=args.seed)
    sizes = [data.n_features, *args.layers, data.n_classes]
    output = "softmax"
    net = gpubp.Network(sizes, hidden=args.hidden, output=output, device=args.device,
                        dtype=args.dtype, seed=args.seed)
    n_params = sum(w.size + b.size for w, b in zip(net.W, net.b))
    print(f"data: {data.name}, {len(data.X_train)} train / {len(data.X_test)} test examples, "
          f"{data.n_features} features, {data.n_classes} classes", file=out)
    print(f"network: {'-'.join(map(str, sizes))} ({n_params} parameters), hidden={args.hidden}, "
          f"device={net.device} (backend {net.backend.name}), {net.dtype.name}", file=out)
    start = time.perf_counter()
    history = net.fit(data.X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, optimizer=args.optimizer, verbose=args.verbose,
                      validation_data=(data.X_test, data.y_test))
    seconds = time.perf_counter() - start
    result = net.evaluate(data.X_test, data.y_test)
    print(f"trained {len(history)} epochs in {seconds:.2f} s; final train loss "
          f"{history['loss'][-1]:.4f}, train accuracy {history['accuracy'][-1]:.4f}", file=out)
    print(f"test loss {result['loss']:.4f}", file=out)
    print(f"test accuracy {result['accuracy']:.4f}", file=out)
    if args.save:
        net.save(args.save)
        print(f"saved to {args.save}", file=out)
    return 0


def cmd_info(args, out):
    import numba

    import gpubp
    from gpubp.backends.base import cuda_status

    usable, reason = cuda_status()
    print(f"gpubp {gpubp.__version__}", file=out)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {numba.__version__}", file=out)
    try:
        import cupy
        print(f"cupy {cupy.__version__}", file=out)
    except Exception as exc:  # noqa: BLE001 - info reports, never fails
        print(f"cupy not importable ({type(exc).__name__})", file=out)
    print(f"cuda usable: {'yes' if usable else 'no'} ({reason})", file=out)
    return 0


COMMANDS = {"train": cmd_train, "info": cmd_info}


def main(argv=None, out=None):
    """Entry point of the ``gpubp`` console script; returns the exit status."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, out)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"gpubp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gpubp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
