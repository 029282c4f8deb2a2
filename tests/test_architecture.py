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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
