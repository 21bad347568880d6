"""A wall-time budget for ``understudy adapt`` (``minutes``): the training is sized to fit.

The fixed work (the teacher check, the teacher's labels on the held-out site frames, the
deployed student's scores) is done and timed first. Then a few real steps of the
adaptation's own training loop are timed (:func:`distill.distillation.measure_distill_steps`:
the teacher's pass, the site frames and the replayed data included), and what is left of
the budget, less the final scoring, is shared between the epochs:

    epoch = set-up (data, teacher) + steps x seconds per step + its scoring (the original
            val split, the stop frames)

``RESERVE`` of the time left is kept back for what the plan does not count (checkpoints,
the report). The epochs stay as configured unless their fixed costs would take more than
``MAX_FIXED_SHARE`` of the training time or leave an epoch fewer than ``MIN_STEPS`` steps:
then there are fewer (each epoch is one early-stopping check, so not fewer than needed).
The replayed share of the original data is what sets the steps of an epoch (each step
takes its labelled images from it; the site frames cycle within), so it is cut to fit,
never raised above the configured ``replay_fraction``; each epoch draws its own subset.
A budget too small for one epoch of ``MIN_STEPS`` is said in a warning and that minimum
is run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

MIN_STEPS = 10  # optimizer steps an epoch has at least
MAX_FIXED_SHARE = 0.25  # of the training time, at most, on the epochs' fixed costs
RESERVE = 0.05  # of the time left, kept back for what the plan does not count


@dataclass(frozen=True)
class Costs:
    """What was measured before planning, in seconds."""

    left: float  # budget left now
    seconds_per_step: float  # one optimizer step of the adaptation (teacher pass included)
    setup: float  # an epoch's set-up: the teacher and the data loaded, a first step
    epoch_scoring: float  # scoring after each epoch: the original val split + stop frames
    final_scoring: float  # scoring the adapted student at the end (as the deployed one)


@dataclass(frozen=True)
class BudgetPlan:
    """How the training was sized (the report's ``budget``)."""

    minutes: float
    epochs: int
    steps_per_epoch: int
    replay_fraction: float
    planned_seconds: float  # from the plan to the end of the run
    fits: bool
    costs: Costs

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["costs"] = {k: round(v, 2) for k, v in out["costs"].items()}
        out["planned_seconds"] = round(self.planned_seconds, 1)
        out["replay_fraction"] = round(self.replay_fraction, 4)
        return out


def plan(
    minutes: float,
    costs: Costs,
    epochs: int,
    n_replay: int,
    labelled_batch: int,
    max_fraction: float,
) -> BudgetPlan:
    """The epochs, steps per epoch and replayed share that fit ``costs.left`` seconds.

    ``n_replay``: images of the original train split; ``labelled_batch``: of them per step;
    ``max_fraction``: the configured replayed share (never exceeded)."""
    full = max(1, math.floor(n_replay * max_fraction / labelled_batch))  # steps at most
    least = min(MIN_STEPS, full)
    per_epoch_fixed = costs.setup + costs.epoch_scoring
    train_left = costs.left * (1 - RESERVE) - costs.final_scoring

    def steps_for(n_epochs: int) -> int:
        return math.floor((train_left / n_epochs - per_epoch_fixed) / costs.seconds_per_step)

    n = epochs
    while n > 1 and (
        steps_for(n) < least
        or (n * per_epoch_fixed > MAX_FIXED_SHARE * train_left and steps_for(n) < full)
    ):
        n -= 1
    steps = min(full, steps_for(n))
    fits = steps >= least
    if not fits:
        steps = least
    fraction = min(max_fraction, steps * labelled_batch / n_replay)
    planned = costs.final_scoring + n * (per_epoch_fixed + steps * costs.seconds_per_step)
    result = BudgetPlan(minutes, n, steps, fraction, planned, fits, costs)
    if not fits:
        log.warning(
            "adapt: the budget of %g minutes leaves %.0f s after the fixed work, less than one "
            "epoch of %d steps needs (%.0f s); running that minimum anyway, over budget",
            minutes,
            costs.left,
            steps,
            planned,
        )
    return result


def line(p: BudgetPlan) -> str:
    """One line: what the budget allows."""
    return (
        f"adapt budget {p.minutes:g} min: {p.epochs} epochs x {p.steps_per_epoch} steps "
        f"({p.costs.seconds_per_step:.2f} s each), {p.replay_fraction:.1%} of the original "
        f"data replayed per epoch; {p.planned_seconds:.0f} s planned of {p.costs.left:.0f} s "
        "left" + ("" if p.fits else " (does not fit: the minimum runs)")
    )
