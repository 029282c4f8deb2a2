"""Whether the ``cuda`` backend can run here, and if not, why (no CuPy or GPU needed).

:func:`probe` checks, in order: CuPy imports; a CUDA driver is loadable; a device is
present; the driver's major CUDA version is at least that of CuPy's runtime; a CuPy
operation and a Numba CUDA kernel launch both give the right result on the device (the
latter compiles a kernel, catching a missing NVVM or a PTX the driver is too old to load).

Warnings raised while probing (CuPy's first use may warn, e.g. about a CUDA path) are no
reason to call the GPU unusable: they are recorded, not raised, even where warnings are
errors (the test suite). A definite answer is cached; a trial that *failed* (an
exception: out of memory, a busy device) is not, so the next call probes again.
"""

import warnings


def simulated():
    """Whether Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before import)."""
    from numba import config  # numba's config: light, but keeps this module free of numba at import

    return bool(config.ENABLE_CUDASIM)


def gpus_hidden_by_simulator():
    """How many CUDA devices CuPy sees while the simulator is on (0 when it is off, or
    without CuPy or a GPU): ``NUMBA_ENABLE_CUDASIM=1`` left set on a GPU machine."""
    if not simulated():
        return 0
    try:
        import cupy  # optional: CuPy; only asked whether a GPU is there

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - no CuPy, no driver: nothing hidden
        return 0


_cached = None


def probe(trial):
    """Whether the CUDA backend can run here, and why not. Never raises.

    Parameters
    ----------
    trial : callable ``(xp, x) -> bool``
        Runs one fused kernel of the backend on ``x`` (eight float32 values on the
        device, four negative and four positive) and says whether its result is right;
        the backend passes it (:func:`gpubp.backends.cuda.probe`), so that this module
        needs nothing of the backend it probes.

    Returns
    -------
    usable : bool
    reason : str
        ``"Numba CUDA simulator"`` under the simulator, the device's name when usable,
        otherwise what was missing or failed, with the exception's full message.
    """
    global _cached
    if _cached is not None:
        return _cached
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            usable, reason, definite = _probe(trial)
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
            usable, reason, definite = False, f"the CUDA probe failed ({_describe(exc)})", False
    if usable and caught:
        reason += f" ({len(caught)} warning(s) while probing, first: {caught[0].message})"
    if definite:
        _cached = (usable, reason)
    return usable, reason


def cache_clear():
    """Forget the cached answer (tests; or after installing a driver)."""
    global _cached
    _cached = None


probe.cache_clear = cache_clear


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


def _probe(trial):
    """``(usable, reason, definite)``; ``definite`` is False for a failed trial."""
    if simulated():
        return True, "Numba CUDA simulator", True
    try:
        import cupy  # optional: CuPy; its absence is an answer
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA library
        return False, f"CuPy is not installed or cannot be imported ({_describe(exc)})", True
    runtime = cupy.cuda.runtime
    try:
        driver_version = runtime.driverGetVersion()
    except Exception as exc:  # noqa: BLE001
        return False, f"no CUDA driver ({_describe(exc)})", True
    if driver_version == 0:
        return False, "no CUDA driver is installed", True
    try:
        n_devices = runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001
        return False, f"no CUDA device ({_describe(exc)})", True
    if n_devices == 0:
        return False, "no CUDA device", True
    runtime_version = runtime.runtimeGetVersion()
    # Only the major version must match: within one major release an older driver runs a
    # newer runtime (CUDA minor-version compatibility); what it cannot do (load too new a
    # PTX) the trial kernel below catches.
    if driver_version // 1000 < runtime_version // 1000:
        return False, (f"wrong CUDA version: the driver supports CUDA {_version(driver_version)}"
                       f" but CuPy was built for CUDA {_version(runtime_version)}"), True
    if not cupy.is_available():
        return False, "CuPy reports no usable CUDA device", True
    try:
        x = cupy.arange(8, dtype=cupy.float32) - 3.5  # four negative, four positive
        if float((x @ x).get()) != 42.0:
            return False, "a trial CuPy operation gave a wrong result", True
    except Exception as exc:  # noqa: BLE001
        return False, f"a trial CuPy operation failed ({_describe(exc)})", False
    try:
        ok = trial(cupy, x)
    except Exception as exc:  # noqa: BLE001
        return False, f"a trial Numba CUDA kernel failed ({_describe(exc)})", False
    if not ok:
        return False, "a trial Numba CUDA kernel gave a wrong result", True
    name = runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return True, name.decode() if isinstance(name, bytes) else str(name), True


def _version(v):
    return f"{v // 1000}.{v % 1000 // 10}"
