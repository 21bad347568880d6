"""The demo's time budget: the plan's arithmetic with made-up throughputs."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from distill.demo_plan import MARGIN, ModelCost, format_plan, plan_budget, replan_student

TEACHER = ModelCost(seconds_per_step=1.0, steps_per_epoch=50, setup_seconds=5, eval_seconds=10)
STUDENT = ModelCost(seconds_per_step=0.5, steps_per_epoch=60, setup_seconds=5, eval_seconds=5)
SPENT = {"data": 20.0, "plan": 10.0}
AFTER = {"export": 15.0, "serve + stream": 10.0, "gate": 15.0}


def test_epochs_fill_the_budget_and_the_rest_goes_to_the_teacher() -> None:
    plan = plan_budget(600, SPENT, TEACHER, STUDENT, AFTER, max_epochs=30)
    # 600 - 30 spent - 40 after - 30 margin - 10 set-up - 15 eval = 475 s of training;
    # 50 + 30 s per epoch pair: 5 each (400 s), and the 75 s left buy the teacher a 6th
    assert (plan.teacher_epochs, plan.student_epochs) == (6, 5)
    assert plan.margin_s == pytest.approx(MARGIN * 600)
    assert plan.stages == {
        "data": 20.0,
        "plan": 10.0,
        "teacher": 5 + 6 * 50 + 10,
        "student": 5 + 5 * 30 + 5,
        **AFTER,
    }
    assert plan.fits and plan.total_s + plan.margin_s == pytest.approx(575)
    assert plan.notes == ()


def test_the_rest_goes_to_the_student_when_a_teacher_epoch_does_not_fit() -> None:
    plan = plan_budget(570, SPENT, TEACHER, STUDENT, AFTER, max_epochs=30)
    # 446.5 s of training: 5 pairs (400 s), 46.5 s left: less than a teacher epoch (50)
    assert (plan.teacher_epochs, plan.student_epochs) == (5, 6)


@pytest.mark.parametrize("budget", [300, 450, 600, 900, 1800, 3600])
@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_the_plan_fits_and_one_more_epoch_would_not(budget: float, scale: float) -> None:
    t = replace(TEACHER, seconds_per_step=TEACHER.seconds_per_step * scale)
    s = replace(STUDENT, seconds_per_step=STUDENT.seconds_per_step * scale)
    plan = plan_budget(budget, SPENT, t, s, AFTER, max_epochs=30)
    assert min(plan.teacher_epochs, plan.student_epochs) >= 1
    assert max(plan.teacher_epochs, plan.student_epochs) <= 30
    assert abs(plan.teacher_epochs - plan.student_epochs) <= 1
    if plan.teacher_epochs < 30 and plan.fits:
        for more_t, more_s in ((1, 0), (0, 1)):
            bigger = replace(
                plan,
                teacher_epochs=plan.teacher_epochs + more_t,
                student_epochs=plan.student_epochs + more_s,
            )
            assert not bigger.fits


def test_at_least_one_epoch_each_and_the_plan_says_it_does_not_fit() -> None:
    plan = plan_budget(120, SPENT, TEACHER, STUDENT, AFTER, max_epochs=30)
    assert (plan.teacher_epochs, plan.student_epochs) == (1, 1)
    assert not plan.fits
    assert len(plan.notes) == 1 and "even 1 epoch of each does not fit in 2.0 min" in plan.notes[0]
    # it needs 30 spent + 40 after + 6 margin + 10 set-up + 15 eval + 80 for the epochs
    assert "about 3.0 min" in plan.notes[0]


def test_a_fast_machine_stops_at_the_profiles_cap() -> None:
    fast = replace(STUDENT, seconds_per_step=0.01)
    plan = plan_budget(3600, SPENT, replace(TEACHER, seconds_per_step=0.01), fast, AFTER, 12)
    assert (plan.teacher_epochs, plan.student_epochs) == (12, 12)
    assert plan.fits and "12 epochs (the profile's cap) fit" in plan.notes[0]


def test_printed_plan() -> None:
    plan = plan_budget(600, SPENT, TEACHER, STUDENT, AFTER, max_epochs=30)
    text = format_plan(plan, {"teacher": "medium", "student": "nano, distilled"})
    lines = text.splitlines()
    assert lines[0] == "budget 10.0 min (600 s)"
    assert "teacher (medium): 1.00 s/step x 50 steps = 50 s/epoch -> 6 epochs" in lines[1]
    assert "student (nano, distilled): 0.50 s/step x 60 steps = 30 s/epoch -> 5 epochs" in text
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert rows["data"][:2] == ["20", "measured"] and rows["plan"][:2] == ["10", "measured"]
    assert rows["teacher"][:3] == ["315", "6", "epochs"]
    assert rows["student"][:3] == ["160", "5", "epochs"]
    assert rows["export"] == ["15", "estimated"] and rows["gate"] == ["15", "estimated"]
    assert "serve + stream" in text and rows["margin"][0] == "30"
    assert rows["total"] == ["575", "of", "600"]
    assert "split: training 475 s (79%: teacher 315, student 160), other stages 70 s" in text


def test_student_replanned_when_the_teacher_ran_slower() -> None:
    plan = plan_budget(600, SPENT, TEACHER, STUDENT, AFTER, max_epochs=30)
    assert plan.stages["teacher"] == 315
    on_time, note = replan_student(plan, elapsed_s=30 + 315, teacher_s=315)
    # 600 - 345 - 40 after - 30 margin - 10 set-up and eval = 175 s: 5 epochs of 30 s
    assert on_time == 5 and "->" not in note
    slow, note = replan_student(plan, elapsed_s=30 + 472.5, teacher_s=472.5)
    # 1.5x slower: 600 - 502.5 - 40 - 30 - 15 = 12.5 s, less than one 45 s epoch: still 1
    assert slow == 1 and "1.50x slower" in note and note.endswith("student 5 -> 1 epoch")
    fast, _ = replan_student(plan, elapsed_s=30 + 100, teacher_s=100)
    assert fast > 5  # time the teacher did not use goes to the student (not faster rates)


def test_epochs_are_integers() -> None:
    for budget, scale in itertools.product((100, 333.3, 1234.5), (0.37, 1.9)):
        t = replace(TEACHER, seconds_per_step=scale)
        plan = plan_budget(budget, SPENT, t, STUDENT, AFTER, max_epochs=30)
        assert isinstance(plan.teacher_epochs, int) and isinstance(plan.student_epochs, int)
