"""What keys the Numba cache of the compiled CPU kernels: the sources compiled into them.

Numba stamps a cached function with its own source file only (its modification time and
size), yet the CPU loops freeze in the integer codes of the tables
(:mod:`gpubp.activations`, :mod:`gpubp.losses`), and the compiled epoch compiles in the
loops of :mod:`gpubp.kernels.cpu` and :mod:`gpubp.kernels.cpu_update`. After a change
there, ``__pycache__`` would serve old machine code (an edited activation code once
turned tanh into the identity). So each cached entry point is a closure over
:func:`digest` of :func:`kernel_sources`, and Numba keys a cached closure by the values
it captures: any change to those files compiles anew.
"""

import ast
import hashlib
import importlib.util
import sys


def kernel_sources(module):
    """The ``gpubp`` modules that ``module`` imports at its top level, transitively, apart
    from ``module`` itself: ``{name: source path}``.

    What a compiled function of ``module`` compiles in from other files is among them:
    the loops it calls and the constants (activation and loss codes) Numba freezes in.
    """
    found, todo = {}, [module]
    while todo:
        name = todo.pop()
        spec = importlib.util.find_spec(name)
        path = getattr(sys.modules.get(name), "__file__", None) or spec.origin
        if name != module:
            found[name] = path
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
        for imported in _top_level_imports(tree, name, spec):
            if imported not in found and imported != module and imported not in todo:
                todo.append(imported)
    return dict(sorted(found.items()))


def _top_level_imports(tree, name, spec):
    """Names of the ``gpubp`` modules imported by the module-level statements of ``tree``."""
    package = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            # a package's own __init__ is not what the names come from when they are its
            # submodules (``from gpubp import activations``): follow the package only
            # when the names are its attributes
            subs = [f"{base}.{alias.name}" for alias in node.names]
            candidates = subs if all(_is_module(c) for c in subs) else [base] + subs
        else:
            nodes.extend(ast.iter_child_nodes(node))
            continue
        yield from (c for c in candidates if c.split(".")[0] == "gpubp" and _is_module(c))


def _is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a name imported from a module, not a submodule
        return False


def digest(sources):
    """SHA-256 over the names and contents of ``sources`` (``{name: path}``)."""
    h = hashlib.sha256()
    for name, path in sources.items():
        with open(path, "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()
