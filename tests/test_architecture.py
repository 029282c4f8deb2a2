"""The package's shape: import layers and no cycles (import-linter), small modules."""

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    # the layers of docs/design.md and no cycle among the modules of any package, as
    # declared in pyproject.toml's [tool.importlinter]
    exe = shutil.which("lint-imports") or pytest.skip("import-linter is not installed")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def _library_modules():
    for base in (ROOT / "gpubp", ROOT / "kernels"):
        for path in sorted(base.rglob("*.py")):
            if "kernels" in path.relative_to(ROOT).parts[:2] and base.name == "gpubp":
                continue  # gpubp/kernels is the link to kernels/
            yield path


def test_modules_stay_readable():
    too_long = [f"{p.relative_to(ROOT)}: {n} lines" for p in _library_modules()
                if (n := len(p.read_text().splitlines())) > 400]
    assert not too_long, too_long


def test_in_function_imports_say_why():
    # an import inside a function is there for an optional dependency or to keep
    # `import gpubp` light, and its line (or the one above) says which
    unexplained = []
    for path in _library_modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    text = lines[inner.lineno - 1] + lines[inner.lineno - 2]
                    if "#" not in text:
                        unexplained.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert not unexplained, sorted(set(unexplained))


# Public signatures that mirror an option set users already know (scikit-learn's
# estimators and L-BFGS solver options, Keras's fit, the `gpubp bench` command line);
# every other function takes at most 8 parameters.
MIRRORS = {"gpubp/optim/lbfgs.py:minimize", "gpubp/bench/compare.py:run_bench",
           "gpubp/core/network.py:Network.__init__", "gpubp/core/network.py:Network.fit",
           "gpubp/sklearn/estimators.py:_BaseMLP.__init__",
           "gpubp/sklearn/estimators.py:MLPClassifier.__init__",
           "gpubp/sklearn/estimators.py:MLPRegressor.__init__",
           # torch.optim.lr_scheduler.ReduceLROnPlateau's parameters, and Keras's monitor
           "gpubp/training/callbacks.py:ReduceLROnPlateau.__init__"}


def _code_lines(node, lines):
    """Lines of ``node``'s own code: no docstring, comments, blanks or nested functions."""
    nested = set()
    for child in ast.walk(node):
        if child is not node and isinstance(child, (ast.FunctionDef, ast.ClassDef)):
            nested.update(range(child.lineno - len(child.decorator_list), child.end_lineno + 1))
    body = node.body
    start = body[0].lineno
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        start = body[1].lineno if len(body) > 1 else node.end_lineno + 1
    return sum(1 for i in range(start, node.end_lineno + 1) if i not in nested
               and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def _functions():
    for path in _library_modules():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        for cls in [None, *[n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]]:
            for node in (tree.body if cls is None else cls.body):
                if isinstance(node, ast.FunctionDef):
                    name = node.name if cls is None else f"{cls.name}.{node.name}"
                    yield f"{path.relative_to(ROOT)}:{name}", node, lines


def test_functions_stay_short():
    long = [f"{where}: {n} lines" for where, node, lines in _functions()
            if (n := _code_lines(node, lines)) > 60]
    assert not long, long


def test_functions_take_few_parameters():
    many = []
    for where, node, _ in _functions():
        a = node.args
        n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
        n -= bool(a.args) and a.args[0].arg in ("self", "cls")
        if n > 8 and where not in MIRRORS:
            many.append(f"{where}: {n} parameters")
    assert not many, many


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_every_simulated_file_takes_the_simulator_fixes():
    """Each ``tests/cudasim_*.py`` calls ``cudasim_support.prepare()`` at module level.

    Without it the simulator's unlocked shared-array allocation can give two threads of a
    block different "shared" arrays, and a reduction drops a thread's sum (CI once saw a
    Poisson cost of 5.11 for 7.77 in ``cudasim_core_features.py``, which lacked the call).
    """
    missing = []
    for path in sorted((ROOT / "tests").glob("cudasim_*.py")):
        if path.name == "cudasim_support.py":
            continue
        calls = [node for node in ast.parse(path.read_text()).body
                 if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                 and getattr(node.value.func, "id", None) == "prepare"]
        if not calls:
            missing.append(path.name)
    assert not missing, f"simulated files without a module-level prepare(): {missing}"
