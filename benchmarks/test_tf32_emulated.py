"""The TF32 emulation of benchmarks/tf32_emulated.py rounds as the hardware does."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tf32_emulated as tf32  # noqa: E402 - a script beside this file, not a package module

ULP = 2.0 ** -10  # TF32's spacing at 1


def test_rounding_keeps_ten_mantissa_bits_nearest_ties_away():
    x = np.array([1 + ULP / 2, 1 + ULP / 2 - 2 ** -23, -(1 + ULP / 2), 1 + 3 * ULP / 2,
                  1 + ULP / 4], np.float32)
    np.testing.assert_array_equal(tf32.to_tf32(x), [1 + ULP, 1, -(1 + ULP), 1 + 2 * ULP, 1])
    np.testing.assert_array_equal(tf32.to_tf32(x, "truncate"), [1, 1, -1, 1 + ULP, 1])
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32)
    got = tf32.to_tf32(special)
    np.testing.assert_array_equal(got[:2], special[:2])
    assert np.isnan(got[2]) and got[3] == 0 and np.signbit(got[4])
    big = np.array([np.finfo(np.float32).max], np.float32)
    assert np.isinf(tf32.to_tf32(big))[0]  # past TF32's largest: inf, as cvt.rna gives
    with pytest.raises(ValueError, match=r"rounding must be 'nearest' or 'truncate', got 'up'"):
        tf32.to_tf32(x, "up")


def test_every_rounded_value_is_within_half_a_tf32_place():
    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32) * 1e3
    rel = np.abs(tf32.to_tf32(x).astype(np.float64) - x) / np.abs(x)
    assert rel.max() <= 2.0 ** -11 and rel.max() > 2.0 ** -12  # used, and bounded
    assert np.all(np.abs(tf32.to_tf32(x).view(np.uint32) & 0x1FFF) == 0)


def test_tf32_gemm_error_is_of_the_tf32_order_and_float32_far_below():
    errors = tf32.gemm_errors()
    assert errors["float32"] < 1e-5
    assert 1e-5 < errors["tf32 (nearest)"] < errors["tf32 (truncate)"] < 2e-3


def test_training_in_tf32_runs_the_emulated_gemms():
    drift = tf32.training_drift(epochs=1)
    assert 0 < drift["max_param_drift"] < 0.05  # the products did change, a little
    assert abs(drift["test_accuracy"]["tf32"] - drift["test_accuracy"]["float32"]) < 0.05
