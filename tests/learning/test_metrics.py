"""Quality metrics on small hand-worked examples."""

from __future__ import annotations

import pytest

from eventml.learning.metrics import calibration, ece


def test_calibration_bins_hold_their_rows_means_and_counts() -> None:
    y = [0, 1, 1, 0, 1, 1]
    p = [0.05, 0.15, 0.12, 0.95, 1.0, 0.5]  # 1.0 falls in the last bin, not an eleventh
    table = calibration(y, p)
    assert [(b["bin"], b["rows"]) for b in table] == [(0, 1), (1, 2), (5, 1), (9, 2)]
    assert [b["predicted"] for b in table] == pytest.approx([0.05, 0.135, 0.5, 0.975], abs=1e-15)
    assert [b["observed"] for b in table] == [0.0, 1.0, 1.0, 0.5]
    # rows-weighted |observed - predicted|: (0.05 + 2 * 0.865 + 0.5 + 2 * 0.475) / 6
    assert ece(y, p) == pytest.approx(3.23 / 6, abs=1e-15)


def test_calibration_leaves_out_probabilities_that_are_not_finite() -> None:
    y = [1, 0, 1, 0]
    p = [0.95, float("nan"), -0.05, float("inf")]  # -0.05 is within bin 0, as its bin rounds
    assert calibration(y, p) == [
        {"bin": 0, "predicted": -0.05, "observed": 1.0, "rows": 1},
        {"bin": 9, "predicted": 0.95, "observed": 1.0, "rows": 1},
    ]
