"""The main job: `gpubp train` on the bundled digits with its defaults."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpubp.cli.commands import main

ROOT = Path(__file__).resolve().parent.parent  # so subprocesses import this checkout


def test_train_defaults_reach_095_on_digits(capsys):
    assert main(["train", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "data: digits, 1347 train / 450 test examples" in out
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert accuracy >= 0.95


def test_python_dash_m_runs_the_same_entry_point():
    proc = subprocess.run([sys.executable, "-m", "gpubp", "train", "--epochs", "2", "--verbose", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"test accuracy 0\.\d+", proc.stdout)


def _console_script():
    """The ``gpubp`` script pip generated for the installed distribution, or None."""
    import importlib.metadata
    import os
    import shutil
    import sysconfig

    try:
        entry = [e for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name == "gpubp"]
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - old importlib
        entry = []
    if not entry:
        return None
    assert entry[0].value == "gpubp.cli:main"
    return shutil.which("gpubp", path=os.pathsep.join(
        [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]))


@pytest.mark.parametrize("how", ["python -m gpubp", "console script"])
def test_exit_status_is_main_status(how):
    """An error exits 1 (main()'s status reaches sys.exit), success 0, argparse errors 2."""
    if how == "python -m gpubp":
        command = [sys.executable, "-m", "gpubp"]
    else:
        script = _console_script()
        if script is None:
            if os.environ.get("CI"):
                pytest.fail("the gpubp console script is not installed (CI installs .[test])")
            pytest.skip("gpubp is not pip-installed here: no console script to run")
        command = [script]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))

    def status(*argv):
        proc = subprocess.run([*command, *argv], capture_output=True, text=True, timeout=300,
                              env=env, cwd=ROOT)
        return proc.returncode, proc.stderr

    code, err = status("evaluate", "--model", "missing.npz")  # main() returns 1
    assert code == 1 and re.search(r"gpubp evaluate: error: .*missing.npz", err), err
    code, err = status("train", "--epochs", "0")  # argparse exits 2 by itself
    assert code == 2, err
    code, err = status("gradcheck", "--layers", "3", "--examples", "2")
    assert code == 0, err
