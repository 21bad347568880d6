"""The gate replaces the deployed student only when the site gets better by the margin
and the original val mAP drops at most the allowed amount."""

from __future__ import annotations

import pytest

from distill.adapt.gate import decide


def test_better_on_site_and_nothing_forgotten_replaces() -> None:
    d = decide((30.0, 36.5), (40.0, 39.4), min_gain=5.0, max_drop=1.0, site_metric="m")
    assert d.replace
    assert d.site_gain == pytest.approx(6.5) and d.original_drop == pytest.approx(0.6)
    assert "better" in d.reasons[0] and "kept" in d.reasons[1]


def test_too_small_a_site_gain_keeps_the_deployed_student() -> None:
    d = decide((30.0, 34.0), (40.0, 40.5), min_gain=5.0, max_drop=1.0)
    assert not d.replace and "not better by enough" in d.reasons[0]
    assert d.original_drop == pytest.approx(-0.5) and "kept" in d.reasons[1]


def test_forgetting_the_original_data_keeps_the_deployed_student() -> None:
    d = decide((30.0, 45.0), (40.0, 38.5), min_gain=5.0, max_drop=1.0)
    assert not d.replace
    assert "better" in d.reasons[0] and "forgot too much" in d.reasons[1]


def test_the_limits_are_inclusive() -> None:
    assert decide((10.0, 12.0), (50.0, 49.0), min_gain=2.0, max_drop=1.0).replace
    assert not decide((10.0, 11.99), (50.0, 49.0), min_gain=2.0, max_drop=1.0).replace
    assert not decide((10.0, 12.0), (50.0, 48.99), min_gain=2.0, max_drop=1.0).replace
    assert "+0.00" in decide((1.0, 1.0), (2.0, 2.0), min_gain=0.0, max_drop=0.0).reasons[1]
