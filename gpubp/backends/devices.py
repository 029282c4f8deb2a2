"""Device resolution: which hardware a network runs on, and which backend object serves it.

The backends are imported by name (:data:`BACKENDS`), lazily, so that importing gpubp
never needs Numba's JIT, CuPy or a GPU, and so that this module sits above every backend.
"""

import importlib
import os
import warnings

from gpubp.backends.base import Backend, check_options
from gpubp.backends.cuda_probe import gpus_hidden_by_simulator
from gpubp.backends.placement import select_gpu

DEVICES = ("cpu", "cuda", "auto")
BACKENDS = {
    # name -> (module, class); imported lazily so that importing gpubp never needs
    # numba's JIT or CUDA.
    "reference": ("gpubp.backends.base", "Backend"),
    "cpu": ("gpubp.backends.cpu", "CpuBackend"),
    "cuda": ("gpubp.backends.cuda", "CudaBackend"),
}


def cuda_status():
    """Whether a CUDA device is usable, and why not.

    Returns
    -------
    usable : bool
    reason : str
        What was found ("CuPy is not installed", "no CUDA device", ...). Never raises:
        every probe is wrapped so that importing or using gpubp never fails because of CUDA.
    """
    try:
        # in an MPI job each rank probes (and so creates its context on) its own GPU, not
        # GPU 0: stray contexts there make ranks fail in exclusive-process mode
        select_gpu()
    except Exception as exc:  # noqa: BLE001 - a broken driver: no usable GPU
        return False, f"the GPU of this rank could not be selected ({type(exc).__name__}: {exc})"
    try:
        cuda = importlib.import_module("gpubp.backends.cuda")
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable GPU"
        return False, f"the CUDA backend could not be imported ({type(exc).__name__}: {exc})"
    try:
        return cuda.probe()
    except Exception as exc:  # noqa: BLE001
        return False, f"the CUDA probe failed ({type(exc).__name__}: {exc})"


def default_device():
    """The device used when none is given: ``$GPUBP_DEVICE`` or ``"cpu"``."""
    return os.environ.get("GPUBP_DEVICE", "").strip().lower() or "cpu"


def resolve_device(device=None, fallback=True):
    """Choose the hardware to run on.

    Parameters
    ----------
    device : {"cpu", "cuda", "auto"} or None
        ``None`` reads ``$GPUBP_DEVICE`` (default ``"cpu"``). ``"auto"`` picks the GPU
        when usable, silently. ``"cuda"`` falls back to the CPU with a warning that says
        why, or raises when ``fallback`` is false.
    fallback : bool

    Returns
    -------
    str
        ``"cpu"`` or ``"cuda"``.
    """
    source = ""
    if device is None:
        device, source = default_device(), " from $GPUBP_DEVICE (read when device is None)"
    if not isinstance(device, str) or device.lower() not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}{source}")
    device = device.lower()
    if device == "cpu":
        return "cpu"
    usable, reason = cuda_status()
    if usable:
        hidden = gpus_hidden_by_simulator()
        if hidden:
            warnings.warn(f"device={device!r} runs Numba's CUDA simulator (NumPy arrays, "
                          f"for tests) because NUMBA_ENABLE_CUDASIM=1 is set, though "
                          f"{hidden} CUDA device(s) are present; unset it to use the GPU",
                          RuntimeWarning, stacklevel=3)
        return "cuda"
    if device == "auto":
        return "cpu"
    if not fallback:
        raise RuntimeError(f"device='cuda' was requested but no GPU is usable: {reason}")
    warnings.warn(
        f"device='cuda' requested but no GPU is usable ({reason}); using the CPU instead",
        RuntimeWarning,
        stacklevel=3,
    )
    return "cpu"


def get_backend(device="cpu", backend=None, **options):
    """The backend object for a resolved device.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Resolved hardware (see :func:`resolve_device`).
    backend : str or None
        ``"reference"`` or ``"cpu"`` on the CPU (default ``"cpu"``, or ``"reference"`` if
        the fused CPU backend cannot be imported); ``"cuda"`` on the GPU.
    **options
        Passed to the backend's constructor (e.g. ``weight_grad`` for ``cuda``); see
        :data:`gpubp.backends.base.BACKEND_OPTIONS`. An option no backend takes is a
        TypeError, an invalid value a ValueError.
    """
    if backend is None:
        backend = "cuda" if device == "cuda" else "cpu"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    if (backend == "cuda") != (device == "cuda"):
        raise ValueError(f"backend {backend!r} does not run on device {device!r}")
    check_options(options, backend)
    module_name, class_name = BACKENDS[backend]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError:
        if backend != "cpu":
            raise
        cls = Backend  # the fused CPU backend is optional; the reference always works
    if backend == "cuda":
        select_gpu()  # in an MPI job, each rank on GPU local_rank % device_count
    if cls is Backend:
        return cls()  # the reference backend takes no options (xp, kernels are internal)
    return cls(**options)
