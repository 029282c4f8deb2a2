"""A kernel launch with its arguments packed once: the one use of numba-cuda private API.

numba-cuda's ``_Kernel.launch(args, grid, block, stream, sharedmem)`` re-packs every
argument on every call (``_prepare_args``: an array becomes meminfo, parent, size,
itemsize, pointer, shape and strides; a scalar a ctypes value), builds a
``cuda.core.LaunchConfig`` and then calls ``cuda.core.launch(stream, config, kernel,
*packed)``. For a training step that launches the same kernels on the same workspaces
every time, all of that is the same every time. :func:`bind` does it once and returns a
zero-argument callable that only calls ``cuda.core.launch``.

It reads ``compiled._codelibrary.get_cufunc().kernel``, ``compiled._prepare_args``,
``compiled.argument_types``, ``compiled.debug`` and ``compiled.cooperative``, as
``_Kernel.launch`` itself does in numba-cuda 0.30 (``numba/cuda/dispatcher.py``). Those
are private, so :data:`TESTED` names the numba-cuda versions this was read against: any
other version, a debug kernel (whose launch also reads an error code back), an argument
that would need a copy back (``retr``), or a missing attribute takes the public path
instead, ``compiled.launch`` with the same arguments bound (correct, only slower).
``tests/test_cuda_launch_cache.py`` checks that the packed arguments equal those
``_Kernel.launch`` itself passes to ``cuda.core.launch``.
"""

import functools

TESTED = ((0, 30),)  # numba-cuda (major, minor) releases whose _Kernel.launch was read


def numba_cuda_version():
    """``(major, minor)`` of the installed numba-cuda, or None when it cannot be told."""
    try:
        from numba_cuda import __version__  # the distribution's version (numba-cuda's own)
    except ImportError:
        return None
    try:
        return tuple(int(part) for part in __version__.split(".")[:2])
    except ValueError:
        return None


def private_api_usable(version=None):
    """Whether :func:`bind` may pack the arguments itself (a tested numba-cuda)."""
    version = numba_cuda_version() if version is None else version
    return version in TESTED


def _public(compiled, args, grid, block, stream):
    return functools.partial(compiled.launch, tuple(args), grid, block, stream, 0)


def bind(compiled, args, grid, block, stream, private=None):
    """A zero-argument callable that launches ``compiled`` on ``args``.

    Parameters
    ----------
    compiled : numba-cuda ``_Kernel`` (``dispatcher.compile(signature)``)
    args : sequence
        The kernel's arguments, already checked against its signature (device arrays
        that stay alive as long as the returned callable: it holds them).
    grid, block : int or tuple
    stream : ``cuda.core`` stream (anything ``cuda.core.launch`` takes)
    private : bool or None
        Pack the arguments here (None: when :func:`private_api_usable`); False forces the
        public path.

    Returns
    -------
    callable
        Its ``packed`` attribute is True when the arguments were packed once.
    """
    if private is None:
        private = private_api_usable()
    if private:
        try:
            launch = _packed(compiled, args, grid, block, stream)
        except (AttributeError, NotImplementedError, TypeError):
            launch = None  # a numba-cuda that differs from the one read: the public path
        if launch is not None:
            launch.packed, launch.keep = True, tuple(args)  # keep: the arrays stay alive
            return launch
    launch = _public(compiled, args, grid, block, stream)
    launch.packed, launch.keep = False, tuple(args)
    return launch


def _packed(compiled, args, grid, block, stream):
    """The private path; None when it does not apply (see the module docstring)."""
    from numba.cuda import dispatcher  # the launch and LaunchConfig numba itself uses

    if compiled.debug:
        return None
    kernel = compiled._codelibrary.get_cufunc().kernel
    retr, packed = [], []
    for argtype, value in zip(compiled.argument_types, args, strict=True):
        compiled._prepare_args(argtype, value, stream, retr, packed)
    if retr:  # a host argument copied to the device and back: not a cacheable launch
        return None
    cooperative = ("is_cooperative" if dispatcher.CUDA_CORE_GE_1_0
                   else "cooperative_launch")
    config = dispatcher.LaunchConfig(grid=grid, block=block, shmem_size=0,
                                     **{cooperative: compiled.cooperative})
    return functools.partial(dispatcher.launch, stream, config, kernel, *packed)
