"""The feature-cost benchmark (benchmarks/feature_costs.py) runs: every variant trains
in-process on a tiny case, and the table's ratios come from its figures. Nothing is
asserted about speed."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import feature_costs  # noqa: E402 - a script beside this file, not a package module


@pytest.mark.parametrize("variant", list(feature_costs.VARIANTS))
def test_every_variant_trains(variant):
    seconds = feature_costs.time_variant(variant, (12, 9, 7, 3), 16, epochs=1, samples=64)
    assert math.isfinite(seconds) and seconds > 0


def test_table_gives_ratios_to_the_first_variant():
    text = feature_costs.table({"plain (sigmoid, sgd)": 0.5, "gelu": 0.75})
    assert "| gelu | 750.0 | 1.50 |" in text and "| plain (sigmoid, sgd) | 500.0 | 1.00 |" in text


def test_case_is_checked():
    assert feature_costs.parse_case("784-512-10@64") == ((784, 512, 10), 64)
    with pytest.raises(ValueError, match=r"case must look like '784-512-512-10@128', got 'x'"):
        feature_costs.parse_case("x")
