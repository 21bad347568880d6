"""The gate: does the adapted student replace the deployed one?

Yes only if both hold:

- **site**: the adapted student's site metric beats the deployed student's by at least
  ``min_gain`` points. The metric is mAP50-95 on labelled site frames when the run was
  given some (``--site-labels``), else the agreement with the teacher on the held-out
  site frames (``site_metric``: ``map50_95`` against the teacher's pseudo-labels, or
  ``f1`` at the deployed operating point);
- **original**: its COCO mAP50-95 on the original val split is at most ``max_drop``
  points below the deployed student's (nothing the fleet relied on was forgotten).

Latency needs no check: the adapted student has the deployed one's architecture and
input size, so ``understudy bench --budget`` measures the same numbers for both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    """The verdict and its numbers (points)."""

    replace: bool
    site_metric: str  # what was compared on the site, e.g. "agreement map50_95"
    site_deployed: float
    site_adapted: float
    site_gain: float
    min_gain: float
    original_deployed: float
    original_adapted: float
    original_drop: float
    max_drop: float
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}


def decide(
    site: tuple[float, float],
    original: tuple[float, float],
    *,
    min_gain: float,
    max_drop: float,
    site_metric: str = "site metric",
) -> GateDecision:
    """Gate on ``site`` = (deployed, adapted) and ``original`` = (deployed, adapted)
    mAP50-95, all in points (see the module docstring)."""
    gain = round(site[1] - site[0], 2) + 0.0  # + 0.0: no "-0.00"
    drop = round(original[0] - original[1], 2) + 0.0
    site_ok = gain >= min_gain
    kept = drop <= max_drop
    reasons = (
        f"{site_metric}: {site[0]:.2f} -> {site[1]:.2f} ({gain:+.2f} points; "
        f"needs >= {min_gain:+.2f}): {'better' if site_ok else 'not better by enough'}",
        f"original val mAP50-95: {original[0]:.2f} -> {original[1]:.2f} ({0.0 - drop:+.2f} points; "
        f"may drop <= {max_drop:.2f}): {'kept' if kept else 'forgot too much'}",
    )
    return GateDecision(
        replace=site_ok and kept,
        site_metric=site_metric,
        site_deployed=site[0],
        site_adapted=site[1],
        site_gain=gain,
        min_gain=min_gain,
        original_deployed=original[0],
        original_adapted=original[1],
        original_drop=drop,
        max_drop=max_drop,
        reasons=reasons,
    )
