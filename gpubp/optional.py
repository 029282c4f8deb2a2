"""Optional dependencies: one helper imports each and says exactly what to install.

Every extra of ``pyproject.toml`` (``gpubp[mpi]``, ``[onnx]``, ``[plot]``, ``[sklearn]``,
``[tensorboard]``, ``[mlflow]``, ``[safetensors]``, ``[torch]``) is imported through
:func:`require`, so that a missing one is always the same ``ImportError``: what needed it,
the package, and the ``pip install`` line that brings it.

>>> require("json", extra="none", purpose="a doctest").__name__
'json'
"""

import sys


def hint(purpose, package, extra=None):
    """The sentence of a missing optional dependency: ``"<purpose> needs <package>: pip install
    'gpubp[<extra>]'"`` (``pip install <package>`` for a package outside the extras)."""
    install = f"pip install 'gpubp[{extra}]'" if extra else f"pip install {package}"
    return f"{purpose} needs {package}: {install}"


def require(module, extra, purpose=None, package=None):
    """Import ``module`` (e.g. ``"mpi4py.MPI"``) and return it, or raise an ImportError that
    says what to install.

    Parameters
    ----------
    module : str
        The module's import name.
    extra : str or None
        The gpubp extra that installs it (``"mpi"``: ``pip install 'gpubp[mpi]'``); None for
        a package installed on its own.
    purpose : str or None
        What needs it, the start of the message (default ``"this feature"``).
    package : str or None
        The distribution's name on PyPI when it differs from the module's top-level name
        (``"scikit-learn"`` for ``sklearn``).

    Raises
    ------
    ImportError
        ``"<purpose> needs <package>: pip install 'gpubp[<extra>]' (<the import error>)"``,
        chained to the original error.
    """
    try:
        __import__(module)  # what an import statement calls (and what tests replace)
        return sys.modules[module]
    except ImportError as exc:
        package = package or module.split(".")[0]
        raise ImportError(f"{hint(purpose or 'this feature', package, extra)} ({exc})") \
            from exc
