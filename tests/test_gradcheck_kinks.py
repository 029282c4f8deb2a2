"""Gradient checking at relu's kink, and with valid targets for every loss (issue 18)."""

import io
import re

import numpy as np
import pytest

import gpubp
from gpubp.cli.commands import main
from gpubp.core.network import Network


def _relu_net_with_a_dead_example():
    """6-5-4-3 relu; example 0 turns every unit of layer 1 off, so its z^2 = b^2 = 0."""
    net = Network([6, 5, 4, 3], hidden="relu", dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(8, 6))
    W, b = net.get_params()
    X[0] = 0  # an all-zero input: z^1 = b^1 ...
    b[0][:] = -0.5  # ... pushed below the kink: layer 1 is off for example 0
    net.set_params(W, b)
    Y = np.arange(8) % 3
    return net, X, Y


def test_entries_straddling_the_kink_are_reported_apart():
    net, X, Y = _relu_net_with_a_dead_example()
    errors, kinks = gpubp.gradcheck(net, X, Y, return_kinks=True)
    assert (errors <= 1).all()
    # b^2's four entries move z^2 of example 0 off 0 both ways; nothing else touches a kink
    assert kinks.tolist() == [0, 4, 0]
    assert np.array_equal(gpubp.gradcheck(net, X, Y), errors)  # the old return, unchanged


def test_the_check_stays_strict_away_from_the_kink(monkeypatch):
    net, X, Y = _relu_net_with_a_dead_example()
    real = Network.gradients

    def wrong(self, X, Y, sample_weight=None, **options):
        dW, db = real(self, X, Y, sample_weight, **options)
        dW[1][0, 0] += 1e-4  # one differentiable entry of layer 2, slightly off
        return dW, db

    monkeypatch.setattr(Network, "gradients", wrong)
    errors, kinks = gpubp.gradcheck(net, X, Y, return_kinks=True)
    assert errors[1] > 1 and errors[0] <= 1 and kinks[1] == 4


def _gradcheck(*argv):
    out = io.StringIO()
    return main(["gradcheck", *argv], out=out), out.getvalue()


def test_cli_gradcheck_relu_passes_at_the_default_seed(capsys):
    status, out = _gradcheck("--hidden", "relu")
    assert status == 0, capsys.readouterr().err
    assert re.search(r"layer 2: .*\(4 entries at a non-differentiable point of relu", out)
    assert "ok: worst error" in out


def test_cli_gradcheck_relu_still_fails_a_tolerance_too_tight(capsys):
    status, _ = _gradcheck("--hidden", "relu", "--atol", "0", "--rtol", "1e-30")
    assert status == 1 and "gradient check failed" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--output", "exp"], ["--output", "exp", "--hidden", "relu"],
                                  ["--output", "sigmoid"], ["--output", "identity"],
                                  ["--output", "relu", "--loss", "mse"]])
def test_cli_gradcheck_draws_valid_targets_for_every_output(argv, capsys):
    status, out = _gradcheck(*argv)
    assert status == 0, capsys.readouterr().err
    assert "ok: worst error" in out
