"""Check the teacher before distilling, and say afterwards what distillation bought.

Distillation helps only when the teacher knows more than the student can learn alone. A
teacher trained briefly, on little data or on other data can be *behind* the student
trained alone, and distilling from it then costs the student accuracy (docs/distillation.md,
"When distillation does not help", has a measured case). So before a distillation run:

1. the teacher is evaluated on the val split (COCO mAP through the project's evaluator,
   :mod:`distill.evaluate`, at the distillation's input size: the teacher as it teaches);
2. a **reference** for the student, when there is one, is evaluated too: a checkpoint of
   the student trained alone (``--baseline``), the student's starting checkpoint (for a
   command that adapts a student), or a short scratch run (``--baseline-epochs N``,
   scored by its own training run's final evaluation, so it costs no extra evaluation);
3. the teacher must be ahead of the reference by ``margin`` mAP50-95 points (default
   :data:`DEFAULT_MARGIN`), else :func:`check_teacher` raises :class:`TeacherNotAhead`
   (commands print its one line and exit 1) unless ``force``;
4. without a reference, a teacher below :data:`LOW_TEACHER_MAP` is reported as low (a
   warning, not a stop).

Each model is evaluated at most once. After the run, :func:`write_distill_report` puts
teacher, reference and distilled student side by side (``distill_report.json`` and
``.md`` in the run folder), with the gain over the reference and the retention of the
teacher's mAP; the student's numbers are its training run's final evaluation (no extra
evaluation either).

Commands call :func:`check_teacher` before any training (under ``torchrun`` only rank 0,
see :func:`is_rank_zero`): ``distill`` and ``auto`` do; a command that starts the student
from a checkpoint passes that checkpoint as the reference.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from runtime.data.records import DatasetSplit
from runtime.errors import ConfigError, ModelFileError
from runtime.evaluate import EvalResult

DEFAULT_MARGIN = 2.0  # mAP50-95 points the teacher must lead the reference by
# Without a reference: a teacher under 20 mAP50-95 points gets a warning. Measured: on
# the small dataset a `large` teacher at 18.17 was behind the `nano` trained
# alone (21.65); on the project's synth benchmark the nano alone reaches 51.6-55.8 and
# the large teacher 73.8 (benchmarks/results/accuracy.md). A teacher that low is in the
# range where a small student trained alone has been measured ahead of it.
LOW_TEACHER_MAP = 20.0
ADVICE = (
    "train the teacher longer or on more data, use a stronger teacher, or train the student alone"
)


@dataclass(frozen=True)
class Score:
    """One model's COCO mAP on the val split (points, 0-100).

    role: "teacher", "reference" or "student"; how: where the number comes from;
    seconds: what obtaining it cost (evaluation, or training + evaluation for a scratch
    reference); 0 when read from a run that evaluated it anyway.
    """

    role: str
    path: str
    map50_95: float
    map50: float | None  # None where only mAP50-95 was kept
    seconds: float
    how: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TeacherCheck:
    """The verdict of :func:`check_teacher`.

    passed: the teacher leads the reference by ``margin`` (True without a reference);
    forced: it does not, and the run goes on anyway (``--force``); low: no reference and
    the teacher is under ``LOW_TEACHER_MAP``; seconds: the whole check.
    """

    teacher: Score
    reference: Score | None
    margin: float
    passed: bool
    forced: bool
    low: bool
    message: str
    seconds: float

    @property
    def lead(self) -> float | None:
        """Teacher minus reference mAP50-95 points (None without a reference)."""
        if self.reference is None:
            return None
        return round(self.teacher.map50_95 - self.reference.map50_95, 2)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["teacher"] = self.teacher.to_dict()
        d["reference"] = self.reference.to_dict() if self.reference else None
        d["lead"] = self.lead
        return d


class TeacherNotAhead(Exception):
    """The teacher does not lead the reference by the margin. ``str()`` is the one-line
    explanation with the numbers; ``check`` the full verdict. Commands print it and exit 1
    (a check that says no, like the budget gate; not a malformed input)."""

    def __init__(self, check: TeacherCheck) -> None:
        super().__init__(check.message)
        self.check = check


def is_rank_zero() -> bool:
    """Whether this process evaluates (rank 0 under ``torchrun``; always without it). The
    other ranks skip the check and wait for rank 0 where the process group is set up."""
    return int(os.environ.get("RANK", "0")) == 0


# -- evaluation ---------------------------------------------------------------------------
def teacher_detect(teacher, images: list) -> list:
    """Detections of a teacher on source images (``teacher.detect``: each image
    letterboxed into the teacher's own input, boxes mapped back, the evaluation
    thresholds). ``images``: (H, W, 3) uint8 RGB as decoded from the split's files;
    returns one Detections per image, boxes xyxy in that image's pixels."""
    return teacher.detect(images, pixel_format="RGB")


def evaluate_teacher(
    path: str | Path,
    split: DatasetSplit,
    img_size: int,
    layout_file: str | None = None,
    progress: bool = True,
    kind: str = "",
) -> EvalResult:
    """COCO mAP of a teacher on ``split`` at the distillation input size ``img_size``: a
    checkpoint through :func:`distill.evaluate.evaluate_model`, an ONNX teacher through the
    teacher interface (:func:`teacher_detect`, scored by
    :func:`distill.evaluate.evaluate_detect`). The teacher is opened as the distillation
    opens it (:func:`distill.teachers.open_teacher`: same class checks)."""
    import torch

    from distill.evaluate import evaluate_detect, evaluate_model
    from distill.teachers import NativeTeacher, open_teacher

    teacher = open_teacher(
        path, split.class_names, torch.device("cpu"), False, layout_file, kind, img_size
    )
    if isinstance(teacher, NativeTeacher):  # a detector of this family: the usual evaluation
        return evaluate_model(teacher.model, split, img_size, progress=progress)
    return evaluate_detect(lambda images: teacher_detect(teacher, images), split, progress=progress)


def evaluate_reference(path: str | Path, split: DatasetSplit, progress: bool = True) -> EvalResult:
    """COCO mAP of a reference model (checkpoint at its own input size, or an exported
    model through the runtime), exactly as ``understudy eval`` scores it."""
    from distill.evaluate import evaluate_path

    return evaluate_path(path, split, progress=progress)


def _timed(role: str, path: str | Path, how: str, run) -> Score:
    t0 = time.perf_counter()
    result = run()
    seconds = round(time.perf_counter() - t0, 2)
    return Score(role, str(path), result.map50_95, result.map50, seconds, how)


def scratch_reference(
    cfg, data: str | Path, out_dir: str | Path, epochs: int, progress: bool = True
) -> Score:
    """Train the student alone for ``epochs`` (``cfg``'s training keys, its KD section
    ignored) into ``out_dir``; its score is that run's own final evaluation. A finished
    run of the same config and data in ``out_dir`` is reused."""
    from dataclasses import replace

    from distill.checkpoint import read_checkpoint
    from distill.config import to_dict
    from distill.train import train
    from distill.train_config import TrainConfig

    if epochs < 1:
        raise ConfigError(f"--baseline-epochs must be >= 1, got {epochs}")
    plain = TrainConfig(**{f.name: getattr(cfg, f.name) for f in fields(TrainConfig)})
    plain = replace(plain, epochs=epochs, eval_every=0)
    model = Path(out_dir) / "model.pt"
    how = f"the student trained alone, epochs={epochs} ({model})"
    t0 = time.perf_counter()
    ckpt = read_checkpoint(model) if model.is_file() else None
    if ckpt is None or ckpt.get("config") != to_dict(plain) or ckpt.get("data") != str(data):
        train(plain, data, out_dir, progress=progress)
        ckpt = read_checkpoint(model)
    else:
        how += ", reused"
    m = ckpt.get("metrics", {})
    seconds = round(time.perf_counter() - t0, 2)
    return Score("reference", str(model), m["map50_95"], m["map50"], seconds, how)


# -- the decision ---------------------------------------------------------------------------
def decide(
    teacher: Score,
    reference: Score | None,
    margin: float = DEFAULT_MARGIN,
    force: bool = False,
    seconds: float = 0.0,
) -> TeacherCheck:
    """The verdict on measured scores, with its one-line message (numbers included)."""
    t = teacher.map50_95
    head = f"teacher check ({seconds:.1f} s): teacher {t:.2f} mAP50-95"
    if reference is None:
        low = t < LOW_TEACHER_MAP
        hint = "pass --baseline CKPT or --baseline-epochs N to compare it with the student alone"
        if low:
            msg = (
                f"{head}, low (under {LOW_TEACHER_MAP:g}) and no reference to compare: it may be "
                f"behind the student trained alone; {hint}"
            )
        else:
            msg = f"{head}; no reference ({hint})"
        return TeacherCheck(teacher, None, margin, True, False, low, msg, seconds)
    r = reference.map50_95
    lead = t - r
    numbers = (
        f"{head} vs reference {r:.2f} ({reference.path}): {lead:+.2f} points, margin {margin:g}"
    )
    if lead >= margin:
        return TeacherCheck(
            teacher, reference, margin, True, False, False, f"{numbers}: distilling", seconds
        )
    why = (
        f"{numbers}: the teacher is not ahead, so distilling would likely cost the student accuracy"
    )
    if force:
        msg = f"{why}; distilling anyway (--force)"
    else:
        msg = f"{why}: {ADVICE} (--force distils anyway)"
    return TeacherCheck(teacher, reference, margin, False, force, False, msg, seconds)


def check_teacher(
    teacher: str | Path,
    split: DatasetSplit,
    img_size: int,
    *,
    reference: str | Path | Score | None = None,
    margin: float = DEFAULT_MARGIN,
    force: bool = False,
    layout_file: str | None = None,
    kind: str = "",
    teacher_score: Score | None = None,
    progress: bool = True,
) -> TeacherCheck:
    """Evaluate the teacher (unless ``teacher_score`` is given: ``auto`` has it already) and
    the reference (a path is evaluated once; a :class:`Score` is used as is), then
    :func:`decide`. Raises :class:`TeacherNotAhead` when the teacher does not lead the
    reference by ``margin`` points and ``force`` is off; the caller prints the message."""
    if margin < 0:
        raise ConfigError(f"--teacher-margin must be >= 0 points, got {margin}")
    if reference is not None and not isinstance(reference, Score) and not Path(reference).is_file():
        raise ModelFileError(f"{reference}: --baseline not found; pass a checkpoint (.pt)")
    t0 = time.perf_counter()
    spent = 0.0  # a Score given by the caller was paid for before this call
    if teacher_score is None:
        teacher_score = _timed(
            "teacher",
            teacher,
            f"evaluated on {len(split.records)} val images at {img_size} px",
            lambda: evaluate_teacher(teacher, split, img_size, layout_file, progress, kind),
        )
    else:
        spent += teacher_score.seconds
    ref = reference
    if ref is not None and not isinstance(ref, Score):
        ref = _timed(
            "reference",
            reference,
            f"evaluated on {len(split.records)} val images",
            lambda: evaluate_reference(reference, split, progress),
        )
    elif ref is not None:
        spent += ref.seconds
    seconds = round(time.perf_counter() - t0 + spent, 1)
    check = decide(teacher_score, ref, margin, force, seconds)
    if not check.passed and not force:
        raise TeacherNotAhead(check)
    return check


# -- after distilling ---------------------------------------------------------------------
REPORT_NAME = "distill_report"


def student_score(checkpoint: str | Path) -> Score:
    """The distilled student's numbers from its checkpoint: the training run's final
    evaluation on the same val split (no second evaluation)."""
    from distill.checkpoint import read_checkpoint

    m = read_checkpoint(checkpoint).get("metrics", {})
    return Score(
        "student",
        str(checkpoint),
        float(m.get("map50_95", 0.0)),
        float(m.get("map50", 0.0)),
        0.0,
        "the distillation run's final evaluation",
    )


def distill_report(check: TeacherCheck, student: Score, **info: Any) -> dict[str, Any]:
    """Teacher, reference and student side by side, with ``gain`` (student minus
    reference, points), ``retention`` (student / teacher mAP50-95) and the teacher's
    ``lead`` over the reference; ``info`` (command, data, method, ...) is kept as is."""
    from runtime.measure import machine, today

    t, r, s = check.teacher.map50_95, check.reference, student.map50_95
    return {
        **info,
        "machine": machine(),
        "date": today(),
        "teacher": check.teacher.to_dict(),
        "reference": r.to_dict() if r else None,
        "student": student.to_dict(),
        "gain": round(s - r.map50_95, 2) if r else None,
        "retention": round(s / t, 4) if t > 0 else None,
        "teacher_lead": check.lead,
        "check": {
            "margin": check.margin,
            "passed": check.passed,
            "forced": check.forced,
            "low": check.low,
            "message": check.message,
            "seconds": check.seconds,
        },
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The Markdown form of :func:`distill_report`."""
    from runtime.measure import markdown_table

    rows = [report[k] for k in ("teacher", "reference", "student") if report[k]]
    cols = [("role", "model"), ("map50_95", "mAP50-95"), ("map50", "mAP50"), ("path", "file")]
    cols += [("how", "scored"), ("seconds", "s")]
    gain = report["gain"]
    retention = report["retention"]
    lines = [f"# Distillation report ({report['date']})", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`  "]
    lines += [f"Machine: {report['machine']}", "", *markdown_table(rows, cols), ""]
    lines.append(
        "- gain over the reference: "
        + (f"{gain:+.2f} mAP50-95 points" if gain is not None else "no reference")
    )
    lines.append(
        "- retention of the teacher's mAP50-95: "
        + (f"{retention:.1%}" if retention is not None else "undefined (teacher at 0)")
    )
    if gain is not None and gain <= 0:
        lines.append(
            "- distillation did not help here: the student trained alone scored as well or "
            f"better; {ADVICE}"
        )
    lines += [f"- teacher check: {report['check']['message']}", ""]
    return "\n".join(lines)


def write_distill_report(
    out_dir: str | Path, check: TeacherCheck, checkpoint: str | Path, **info: Any
) -> list[Path]:
    """Write ``distill_report.json`` and ``distill_report.md`` into the run folder; returns
    their paths."""
    from runtime.files import write_atomic, write_json_atomic

    report = distill_report(check, student_score(checkpoint), **info)
    out = Path(out_dir)
    return [
        write_json_atomic(out / f"{REPORT_NAME}.json", report),
        write_atomic(out / f"{REPORT_NAME}.md", report_markdown(report)),
    ]
