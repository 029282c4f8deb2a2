"""The command line's checks that need several options or the file system, all made
before any data are read (a long run never ends in a bad argument)."""

import os

from gpubp.cli.files import CliError, check_outputs
from gpubp.distributed import ranks as distributed
from gpubp import datasets
from gpubp.activations import HIDDEN
from gpubp.backends.devices import DEVICES
from gpubp.optim.optimizers import OPTIMIZERS
from gpubp.optim.schedules import SCHEDULES, LinearWarmup, WarmupCosine

# --warmup STEPS with --schedule NAME trains with this per-step schedule
WARMS_UP = {"constant": LinearWarmup, "warmup": LinearWarmup, "cosine": WarmupCosine,
            "warmup_cosine": WarmupCosine}


def schedule_of(args):
    """The ``schedule=`` of ``fit`` for ``--schedule`` and ``--warmup``."""
    if args.warmup is None:
        return args.schedule
    return WARMS_UP[args.schedule.lower()](args.warmup)

def one_of(args, option, allowed, lower=False):
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    if value is None:
        return
    if (value.lower() if lower else value) not in allowed:
        raise CliError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def check_device(args):
    one_of(args, "--device", DEVICES)


def check_data(args):
    """``--data``: a bundled set or an existing file; ``--label-column`` only with a file."""

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


def check_input_file(path, option):
    if path is not None and not os.path.isfile(path):
        why = "a directory" if os.path.isdir(path) else "no such file"
        raise CliError(f"{option} must be an existing file, got {path!r} ({why})")


def check_negative_slope(args):
    if args.negative_slope is not None and (args.hidden != "leaky_relu" or not args.layers):
        raise CliError(f"--negative-slope applies to --hidden leaky_relu (with a hidden "
                       f"layer), got --hidden {args.hidden} and --layers "
                       f"{','.join(map(str, args.layers)) or 'none'}")


def check_train(args):
    check_outputs(args, "--save", "--plot", "--checkpoint")
    one_of(args, "--optimizer", tuple(OPTIMIZERS))
    one_of(args, "--hidden", HIDDEN)
    check_negative_slope(args)
    one_of(args, "--schedule", tuple(SCHEDULES), lower=True)
    if args.warmup is not None and args.schedule.lower() not in WARMS_UP:
        raise CliError(f"--warmup applies to --schedule {' or '.join(WARMS_UP)}, got "
                       f"--schedule {args.schedule}")
    if args.clip_norm is not None and args.clip_value is not None:
        raise CliError("--clip-norm and --clip-value are exclusive, got both")
    one_of(args, "--dtype", ("float32", "float64"))
    check_device(args)
    check_input_file(args.resume, "--resume")
    if args.features or args.labels:
        if args.label_column is not None:
            raise CliError("--label-column applies to --data files, not to --features/--labels")
        check_input_file(args.features, "--features")
        check_input_file(args.labels, "--labels")
    else:
        check_data(args)
    if args.dropout and not args.layers:
        raise CliError(f"--dropout applies to hidden layers, got --dropout {args.dropout:g} "
                       f"with --layers none")
    if args.distributed:
        try:
            import mpi4py  # noqa: F401 - the package alone: MPI is initialised later
        except ImportError:
            raise CliError(f"--distributed: {distributed.MPI_HINT}") from None


def check_bench(args):
    from gpubp.bench.runners import BACKEND_RUNNERS, parse_case  # keeps the command line's start light

    for text in args.cases or ():
        try:
            parse_case(text)
        except ValueError as exc:
            raise CliError(f"--case: {exc}") from None
    from gpubp.bench.runners import PEERS  # as above

    for name in args.peer_names or ():
        if name not in PEERS:
            raise CliError(f"--peer must be one of {', '.join(PEERS)}, got {name!r}")
    for name in args.backends or ():
        if name not in BACKEND_RUNNERS:
            raise CliError(f"--backend must be one of {', '.join(BACKEND_RUNNERS)}, got {name!r}")
    scaling_only = {"--ranks": args.ranks, "--reduction": args.reduction,
                    "--fused": args.fused or None}
    others = {"--case": args.cases, "--matrix": args.matrix, "--peer": args.peer_names,
              "--backend": args.backends,
              "--inference": args.inference
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
