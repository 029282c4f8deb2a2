"""The main job: `gpubp train` on the bundled digits with its defaults."""

import re
import subprocess
import sys

from gpubp.cli import main


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
