"""The files of the ``gpubp`` command line: data in, saved models in, output paths checked.

Kept apart from ``cli.py`` (the parser and the commands): reading the user's data for
``train``/``evaluate``/``predict`` (bundled sets, CSV with or without labels, ``.npz``),
reading a saved model with the class names and feature scaling its header carries, and
checking every output path before any work starts.
"""

import numpy as np


class CliError(Exception):
    """A user error reported as one line."""


def _label_column(args):
    col = args.label_column
    if col is None:
        return -1
    return int(col) if col.strip().lstrip("-").isdigit() else col


def _load_training_data(args):
    from gpubp import datasets

    return datasets.load(args.data, test_size=args.test_size, seed=args.seed, scale=False,
                         label_column=_label_column(args))


def _scaler(X):
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


def _read_model(path, device):
    import gpubp
    from gpubp.io.model import read_npz

    header, _ = read_npz(path)
    net = gpubp.load(path, device=device)
    meta = header.get("cli", {})
    classes = meta.get("classes")
    scaler = meta.get("scaler")
    if scaler is not None:
        scaler = (np.asarray(scaler["mean"]), np.asarray(scaler["std"]))
    return net, classes, scaler


def _scaled(X, scaler):
    return X if scaler is None else (X - scaler[0]) / scaler[1]


def _examples_for(args, net, classes, need_labels):
    """Raw features and (optionally) label indices for evaluate/predict."""
    from gpubp import datasets

    n_in = net.sizes[0]
    if args.data in datasets.NAMES:
        d = _load_training_data(args)
        y = d.y_test
        if classes is not None and tuple(classes) != d.classes:
            raise CliError(f"the model's classes {classes} are not those of {args.data} "
                           f"{list(d.classes)}")
        return d.X_test, y
    if str(args.data).lower().endswith(".npz"):
        d = datasets.load_file(args.data, scale=False)
        X = np.concatenate([d.X_train, d.X_test])
        labels = np.array(d.classes)[np.concatenate([d.y_train, d.y_test])]
    else:
        X, labels = _read_csv_for_model(args, n_in, need_labels)
    if X.shape[1] != n_in:
        raise CliError(f"--data must have {n_in} feature columns (the model's inputs), got "
                       f"{X.shape[1]}")
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


def _read_csv_for_model(args, n_in, need_labels):
    """Features and labels of a CSV; for predict, a file of features alone is accepted too."""
    from gpubp import datasets

    if need_labels or args.label_column is not None:
        return datasets.read_csv(args.data, _label_column(args))
    from gpubp.datasets.readers import first_row

    if len(first_row(str(args.data))) == n_in + 1:  # a label column: the last, as in training
        return datasets.read_csv(args.data, -1)
    return datasets.read_csv(args.data, None)


def _check_outputs(args, *options):
    """Check each given output path (``--save`` ...) before any work, naming the option."""
    from gpubp.io.atomic import check_output_path

    for option in options:
        path = getattr(args, option.lstrip("-").replace("-", "_"))
        if path is None:
            continue
        check_output_path(path, option)
        if option == "--plot":
            from gpubp.training.plotting import check_plot_path

            check_plot_path(path, option)


def _npy_data(args, default_data):
    """Training data from ``--features``/``--labels``: memory-mapped, never read whole."""
    import os

    from gpubp.datasets import Dataset

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
