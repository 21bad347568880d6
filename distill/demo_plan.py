"""The demo's time budget: how many epochs the teacher and the student get.

``understudy demo --minutes M`` generates its data, then times a few real training steps
of each model on this machine (:func:`distill.train.measure_steps`, after a warm-up step)
and an evaluation pass, and splits what is left of the M minutes:

- the stages before the plan (data, the measurements) are counted as they took;
- the stages after training (export + INT8, serving + streaming, the budget gate) and each
  model's set-up and final evaluation are estimated from the measured inference time;
- a margin of ``MARGIN`` of the budget absorbs the estimates' errors;
- the rest trains: the teacher and the student get the same number of whole epochs (the
  schedule and EMA work per epoch), at least 1 and at most the profile's cap; what is left
  over buys the teacher one more epoch if it fits (the student learns from it), else the
  student one.

After the teacher, the student's epochs are planned again from the time then left
(:func:`replan_student`). Pure arithmetic: no torch, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MARGIN = 0.05  # share of the budget kept free for the estimates' errors


@dataclass(frozen=True)
class ModelCost:
    """What training one model costs on this machine (seconds)."""

    seconds_per_step: float  # one optimizer step, measured after a warm-up step
    steps_per_epoch: int
    setup_seconds: float  # building the model and data, first step (measured)
    eval_seconds: float  # the evaluation at the end of training (estimated)

    @property
    def epoch_seconds(self) -> float:
        return self.seconds_per_step * self.steps_per_epoch

    def stage_seconds(self, epochs: int) -> float:
        """The whole training stage: set-up, ``epochs`` epochs and the evaluation."""
        return self.setup_seconds + epochs * self.epoch_seconds + self.eval_seconds


@dataclass(frozen=True)
class Plan:
    """Epochs per model and the estimated seconds of every stage."""

    budget_s: float
    spent: dict[str, float]  # stages done before planning: measured seconds
    teacher: ModelCost
    student: ModelCost
    after: dict[str, float]  # stages after training: estimated seconds
    teacher_epochs: int
    student_epochs: int
    max_epochs: int
    margin_s: float
    notes: tuple[str, ...] = field(default=())

    @property
    def stages(self) -> dict[str, float]:
        """Seconds per stage in running order: measured before the plan, estimated after."""
        return {
            **self.spent,
            "teacher": self.teacher.stage_seconds(self.teacher_epochs),
            "student": self.student.stage_seconds(self.student_epochs),
            **self.after,
        }

    @property
    def total_s(self) -> float:
        return sum(self.stages.values())

    @property
    def fits(self) -> bool:
        return self.total_s + self.margin_s <= self.budget_s


def plan_budget(
    budget_s: float,
    spent: dict[str, float],
    teacher: ModelCost,
    student: ModelCost,
    after: dict[str, float],
    max_epochs: int,
) -> Plan:
    """Epochs of teacher and student that fit ``budget_s`` (see the module docstring)."""
    margin = MARGIN * budget_s
    fixed = sum(spent.values()) + sum(after.values()) + margin
    fixed += teacher.stage_seconds(0) + student.stage_seconds(0)
    train_s = budget_s - fixed
    pair = teacher.epoch_seconds + student.epoch_seconds
    epochs = _clamp(math.floor(train_s / pair) if pair > 0 else max_epochs, max_epochs)
    teacher_epochs, student_epochs = epochs, epochs
    left = train_s - epochs * pair
    if epochs < max_epochs and left >= teacher.epoch_seconds:
        teacher_epochs += 1
    elif epochs < max_epochs and left >= student.epoch_seconds:
        student_epochs += 1
    notes = []
    if train_s < pair:
        notes.append(
            f"even 1 epoch of each does not fit in {budget_s / 60:.1f} min "
            f"(it needs about {(fixed + pair) / 60:.1f} min): running 1 epoch of each"
        )
    elif epochs == max_epochs:
        notes.append(f"{max_epochs} epochs (the profile's cap) fit: the demo ends early")
    return Plan(
        budget_s=budget_s,
        spent=dict(spent),
        teacher=teacher,
        student=student,
        after=dict(after),
        teacher_epochs=teacher_epochs,
        student_epochs=student_epochs,
        max_epochs=max_epochs,
        margin_s=margin,
        notes=tuple(notes),
    )


def replan_student(plan: Plan, elapsed_s: float, teacher_s: float) -> tuple[int, str]:
    """The student's epochs once the teacher is trained, ``elapsed_s`` into the budget;
    the teacher's stage took ``teacher_s``. When it took longer than planned, the machine
    is taken to be that much slower for the student too. Returns (epochs, a note)."""
    slower = max(1.0, teacher_s / plan.stages["teacher"])
    s = plan.student
    left = plan.budget_s - elapsed_s - sum(plan.after.values()) - plan.margin_s
    left -= s.stage_seconds(0) * slower
    epochs = _clamp(math.floor(left / (s.epoch_seconds * slower)), plan.max_epochs)
    note = f"teacher took {teacher_s:.0f} s (planned {plan.stages['teacher']:.0f} s)"
    if slower > 1.0:
        note += f", the machine runs {slower:.2f}x slower than measured"
    if epochs != plan.student_epochs:
        note += f": student {plan.student_epochs} -> {epochs_text(epochs)}"
    return epochs, note


def epochs_text(n: int) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _clamp(epochs: int, max_epochs: int) -> int:
    return max(1, min(max_epochs, epochs))


def format_plan(plan: Plan, labels: dict[str, str]) -> str:
    """The plan as printed before training: per model its measured speed and epochs, per
    stage its seconds (measured or estimated), and how the budget is split.
    ``labels`` names the models, e.g. {"teacher": "medium", "student": "nano, distilled"}."""
    lines = [f"budget {plan.budget_s / 60:.1f} min ({plan.budget_s:.0f} s)"]
    for key, cost, epochs in (
        ("teacher", plan.teacher, plan.teacher_epochs),
        ("student", plan.student, plan.student_epochs),
    ):
        lines.append(
            f"  {key} ({labels.get(key, '')}): {cost.seconds_per_step:.2f} s/step x "
            f"{cost.steps_per_epoch} steps = {cost.epoch_seconds:.0f} s/epoch -> "
            f"{epochs_text(epochs)}"
        )
    lines.append(f"  {'stage':<16}{'seconds':>8}")
    for name, seconds in plan.stages.items():
        how = "measured" if name in plan.spent else "estimated"
        if name in ("teacher", "student"):
            epochs = plan.teacher_epochs if name == "teacher" else plan.student_epochs
            how = f"{epochs_text(epochs)} + set-up and evaluation"
        lines.append(f"  {name:<16}{seconds:>8.0f}  {how}")
    lines.append(f"  {'margin':<16}{plan.margin_s:>8.0f}  {MARGIN:.0%} of the budget")
    lines.append(f"  {'total':<16}{plan.total_s + plan.margin_s:>8.0f}  of {plan.budget_s:.0f}")
    lines.append("  split: " + split_line(plan))
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def split_line(plan: Plan) -> str:
    """One line: how the budget is shared between training and the other stages."""
    stages = plan.stages
    train = stages["teacher"] + stages["student"]
    return (
        f"training {train:.0f} s ({train / plan.budget_s:.0%}: teacher {stages['teacher']:.0f},"
        f" student {stages['student']:.0f}), other stages {plan.total_s - train:.0f} s, "
        f"margin {plan.margin_s:.0f} s"
    )
