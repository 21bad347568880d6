"""The adaptation's time budget: what fits in the time left (distill/adapt/budget.py)."""

from __future__ import annotations

import logging

import pytest

from distill.adapt import budget
from distill.adapt.budget import MIN_STEPS, RESERVE, Costs, plan


def costs(left: float, per_step: float = 1.0) -> Costs:
    return Costs(left=left, seconds_per_step=per_step, setup=20.0, epoch_scoring=10.0,
                 final_scoring=40.0)  # fmt: skip


def test_a_generous_budget_keeps_the_configured_schedule() -> None:
    p = plan(60, costs(10_000), epochs=6, n_replay=2000, labelled_batch=8, max_fraction=1.0)
    assert (p.epochs, p.steps_per_epoch, p.replay_fraction, p.fits) == (6, 250, 1.0, True)
    assert p.planned_seconds == 40 + 6 * (30 + 250)
    # the configured share is never exceeded
    p = plan(60, costs(10_000), epochs=6, n_replay=2000, labelled_batch=8, max_fraction=0.5)
    assert (p.steps_per_epoch, p.replay_fraction) == (125, 0.5)


def test_a_tight_budget_cuts_the_replayed_share_to_fit() -> None:
    c = costs(1000, per_step=2.0)  # 910 s to train after the reserve and the final scoring
    p = plan(20, c, epochs=6, n_replay=2000, labelled_batch=8, max_fraction=1.0)
    assert (p.epochs, p.steps_per_epoch, p.fits) == (6, 60, True)  # (910 / 6 - 30) / 2
    assert p.replay_fraction == pytest.approx(60 * 8 / 2000)
    assert p.planned_seconds <= c.left * (1 - RESERVE)  # the reserve is kept
    assert c.left * (1 - RESERVE) - p.planned_seconds < 6 * c.seconds_per_step  # the rest used


def test_fewer_epochs_when_their_fixed_costs_would_eat_the_time() -> None:
    # 340 s to train: 6 epochs would spend 180 s on set-up and scoring, 2 spend 60 (< 25%)
    p = plan(5, costs(400), epochs=6, n_replay=2000, labelled_batch=8, max_fraction=1.0)
    assert (p.epochs, p.steps_per_epoch, p.fits) == (2, 140, True)
    assert p.planned_seconds <= 400 * (1 - RESERVE)
    # but not when the whole replayed data fits anyway: the epochs then cost no steps
    small = plan(5, costs(500), epochs=6, n_replay=40, labelled_batch=8, max_fraction=1.0)
    assert (small.epochs, small.steps_per_epoch, small.replay_fraction) == (6, 5, 1.0)


def test_fewer_epochs_rather_than_epochs_too_short_to_learn() -> None:
    # 20 s a step: 6 epochs would have 6 steps each, 3 epochs have 13
    p = plan(20, costs(1000, per_step=20.0), epochs=6, n_replay=2000, labelled_batch=8,
             max_fraction=1.0)  # fmt: skip
    assert (p.epochs, p.steps_per_epoch, p.fits) == (3, 13, True)
    assert plan(20, costs(1000, 20.0), 2, 2000, 8, 1.0).epochs == 2  # fewer asked: kept


def test_a_budget_too_small_runs_the_minimum_and_says_so(caplog) -> None:
    c = costs(60)
    with caplog.at_level(logging.WARNING):
        p = plan(1, c, epochs=6, n_replay=2000, labelled_batch=8, max_fraction=1.0)
    assert (p.epochs, p.steps_per_epoch, p.fits) == (1, MIN_STEPS, False)
    assert p.planned_seconds > c.left
    assert "over budget" in caplog.text and "does not fit" in budget.line(p)
    # a dataset smaller than the minimum: all of it, once
    small = plan(1, c, epochs=6, n_replay=16, labelled_batch=8, max_fraction=1.0)
    assert (small.steps_per_epoch, small.replay_fraction) == (2, 1.0)


def test_the_plan_goes_into_the_report_as_numbers() -> None:
    p = plan(20, costs(1000, 2.0), 6, 2000, 8, 1.0)
    d = p.to_dict()
    assert d["minutes"] == 20 and d["costs"]["seconds_per_step"] == 2.0 and d["fits"]
    from distill.adapt.report import budget_text

    text = budget_text(d)
    assert "6 epochs of 60 steps" in text and "24.0% of the original" in text
