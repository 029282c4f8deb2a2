"""The files of the ``gpubp`` command line: data in, saved models in, output paths checked.

Kept apart from ``cli.py`` (the parser and the commands): reading the user's data for
``train``/``evaluate``/``predict`` (bundled sets, CSV with or without labels, ``.npz``),
reading a saved model with the class names and feature scaling its header carries, and
checking every output path before any work starts.
"""

from typing import NamedTuple

import numpy as np
import os


class CliError(Exception):
    """A user error reported as one line."""


def label_column_of(args):
    col = args.label_column
    if col is None:
        return -1
    return int(col) if col.strip().lstrip("-").isdigit() else col


def load_training_data(args):
    from gpubp import datasets  # keeps the command line's start light

    return datasets.load(args.data, test_size=args.test_size, seed=args.seed, scale=False,
                         label_column=label_column_of(args))


def fit_scaler(X):
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


class Model(NamedTuple):
    """A saved model as the CLI uses it: the network and what its header says of its inputs."""

    net: object
    path: str
    classes: list
    scaler: tuple  # (mean, std) that standardise raw features, or None
    inputs: str  # a key of gpubp.io.model.INPUTS

    def describe_inputs(self):
        if self.inputs == "raw":
            return ("raw features, standardised with the scaler stored in the model"
                    if self.scaler is not None else "raw features, used as given")
        if self.inputs == "standardized":
            return "standardised features, as gpubp.datasets.load gives them"
        return "features used as given (the model does not record what its inputs are)"


def read_model(path, device):
    import gpubp  # keeps the command line's start light
    from gpubp.io.model import INPUTS, read_model_file

    header, _ = read_model_file(path)
    net = gpubp.load(path, device=device)
    meta = header.get("cli", {})
    classes = meta.get("classes")
    scaler = meta.get("scaler")
    if scaler is not None:
        scaler = (np.asarray(scaler["mean"]), np.asarray(scaler["std"]))
    # files written before the "inputs" field: the CLI's train stored raw features' scaler
    inputs = header.get("inputs", "raw" if "cli" in header else "unknown")
    if inputs not in INPUTS:
        raise CliError(f"{path} has an invalid header: inputs must be one of "
                       f"{tuple(INPUTS)}, got {inputs!r}")
    if inputs != "raw" and scaler is not None:
        raise CliError(f"{path} has an invalid header: it stores a scaler for raw features "
                       f"but says its inputs are {inputs!r}")
    return Model(net, str(path), classes, scaler, inputs)


def scaled(X, scaler):
    return X if scaler is None else (X - scaler[0]) / scaler[1]


def _bundled_for(args, model):
    """The held-out split of a bundled set, in the form the model was trained on."""
    from gpubp import datasets  # keeps the command line's start light

    name = args.data
    if model.inputs == "unknown":
        raise CliError(
            f"--model {model.path} does not record what its inputs are (saved from Python "
            f"without inputs=...), so the bundled set {name!r} could be fed raw when the model "
            f"was trained on standardised features, or the reverse: save it again with "
            f"gpubp.io.save(net, path, inputs='standardized') if it was trained on "
            f"gpubp.datasets.load({name!r}) (standardised by default), or inputs='raw' if on "
            f"raw features (scale=False)")
    standardized = model.inputs == "standardized"
    d = datasets.load(name, test_size=args.test_size, seed=args.seed, scale=standardized)
    if model.classes is not None and tuple(model.classes) != d.classes:
        raise CliError(f"the model's classes {model.classes} are not those of {name} "
                       f"{list(d.classes)}")
    return (d.X_test if standardized else scaled(d.X_test, model.scaler)), d.y_test


def examples_for(args, model, need_labels):
    """Features as the model takes them, and (optionally) label indices, for evaluate/predict."""
    from gpubp import datasets  # keeps the command line's start light

    net, classes = model.net, model.classes
    n_in = net.sizes[0]
    if args.data in datasets.NAMES:
        return _bundled_for(args, model)
    if model.inputs == "standardized":
        raise CliError(
            f"--model {model.path} was trained on standardised features (gpubp.datasets.load's, "
            f"with the training split's mean and deviation) and stores no scaler to apply to "
            f"the raw features of --data {args.data}: use the bundled set it was trained on, "
            f"or standardise the file's features the same way and save the model again with "
            f"gpubp.io.save(net, path) (inputs then used as given)")
    if str(args.data).lower().endswith(".npz"):
        d = datasets.load_file(args.data, scale=False)
        X = np.concatenate([d.X_train, d.X_test])
        labels = np.array(d.classes)[np.concatenate([d.y_train, d.y_test])]
    else:
        X, labels = read_csv_for_model(args, n_in, need_labels)
    if X.shape[1] != n_in:
        raise CliError(f"--data must have {n_in} feature columns (the model's inputs), got "
                       f"{X.shape[1]}")
    X = scaled(X, model.scaler)
    if labels is None:
        return X, None
    if classes is None:
        y, _ = datasets.encode_labels(labels)
        return X, y
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in labels} - set(index))
    if unknown:
        raise CliError(f"--data has labels the model was not trained on: {unknown[:5]} "
                       f"(model classes: {classes})")
    return X, np.array([index[str(v)] for v in labels])


def read_csv_for_model(args, n_in, need_labels):
    """Features and labels of a CSV; for predict, a file of features alone is accepted too."""
    from gpubp import datasets  # keeps the command line's start light

    from gpubp.datasets.readers import first_row  # keeps the command line's start light

    if args.label_column is not None:
        return datasets.read_csv(args.data, label_column_of(args))
    width = len(first_row(str(args.data)))
    if width == n_in + 1:  # a label column: the last, as in training
        return datasets.read_csv(args.data, -1)
    if need_labels and width == n_in:
        raise CliError(f"--data {args.data} has no label column: its {width} columns are the "
                       f"model's {n_in} inputs; evaluate needs {n_in + 1} columns, the features "
                       f"and a label column (the last, or name it with --label-column)")
    if need_labels:
        raise CliError(f"--data {args.data} must have {n_in + 1} columns (the model's {n_in} "
                       f"inputs and a label column), got {width}")
    return datasets.read_csv(args.data, None)


def check_outputs(args, *options):
    """Check each given output path (``--save`` ...) before any work, naming the option."""
    from gpubp.io.atomic import check_output_path  # keeps the command line's start light

    for option in options:
        path = getattr(args, option.lstrip("-").replace("-", "_"))
        if path is None:
            continue
        check_output_path(path, option)
        if option == "--plot":
            from gpubp.training.plotting import check_plot_path  # keeps the command line's start light

            check_plot_path(path, option)


def npy_data(args, default_data):
    """Training data from ``--features``/``--labels``: memory-mapped, never read whole."""

    from gpubp.datasets import Dataset  # keeps the command line's start light

    if not (args.features and args.labels):
        raise CliError("--features and --labels go together (two .npy files)")
    if args.data != default_data:
        raise CliError("--data and --features/--labels are exclusive, got both")
    arrays = []
    for flag, path in (("--features", args.features), ("--labels", args.labels)):
        if not str(path).lower().endswith(".npy"):
            raise CliError(f"{flag} must be a .npy file, got {path!r}")
        try:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise CliError(f"{flag}: cannot read {path} as .npy ({exc})") from None
    X, y = arrays
    if X.ndim != 2:
        raise CliError(f"--features must be 2-D (P, n_0), got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0] or y.dtype.kind not in "iu":
        raise CliError(f"--labels must be integer labels of shape ({X.shape[0]},), got "
                       f"{y.dtype} of shape {y.shape}")
    n_classes = int(y.max()) + 1 if len(y) else 0
    return Dataset(name=os.path.basename(args.features), X_train=X, y_train=y,
                   X_test=X[:0], y_test=y[:0], classes=tuple(str(i) for i in range(n_classes)))
