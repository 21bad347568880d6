"""`understudy demo`: the main job end to end on embedded defaults, no GPU, no downloads.

synthetic data -> plan -> teacher -> hybrid-distilled student (with unlabelled frames) ->
ONNX (+ INT8 Q/DQ) -> gRPC server -> stream the synthetic video -> budget gate comparing
teacher and student (latency and accuracy) -> summary table and the list of files.

The demo fits a time budget (``--minutes``, 10 by default): after generating its data it
times a few real training steps of each model on this machine and gives them the epochs
that fit (:mod:`distill.demo_plan`), prints that plan, and at the end the wall time of
each stage against it. Profiles: ``demo`` (the budgeted run) and ``tiny`` (a minute or
so; what the test suite and CI run, at most 2 epochs per model). With ``scratch`` a nano
student trained alone for the same epochs follows, outside the budget, and the summary
compares it with the distilled one. The numbers of the demo are not the benchmark's: see
the README's results table for the standard synth benchmark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from distill.config import load
from distill.data.synth_config import SynthConfig
from distill.demo_plan import (
    Plan,
    epochs_text,
    format_plan,
    plan_budget,
    replan_student,
    split_line,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoProfile:
    synth: SynthConfig
    img_size: int
    teacher: str
    max_epochs: int  # per model: the plan never gives more
    batch_size: int
    stream_fps: float
    bench_runs: int
    calib_images: int
    unlabelled_ratio: float = 0.25


# The demo profile trades the benchmark's difficulty for time: objects of 20 px and more
# (the benchmark has 8), a 160 px input, batches of 8 (twice the optimizer steps per image
# of the benchmark's 16: a few minutes of training is a few hundred steps) and a `medium`
# teacher (5.5x the nano's FLOPs, so the gate's student is clearly faster; the benchmark's
# `large` one learns too slowly per minute of a 2-core CPU). The epochs come from the time
# budget.
PROFILES = {
    "demo": DemoProfile(
        SynthConfig(train=800, val=150, unlabelled=300, video_frames=90, min_size=20.0),
        img_size=160,
        teacher="medium",
        max_epochs=30,
        batch_size=8,
        stream_fps=15.0,
        bench_runs=100,
        calib_images=64,
    ),
    "tiny": DemoProfile(
        SynthConfig(
            train=24, val=8, unlabelled=16, video_frames=10, video_width=320, video_height=240
        ),
        img_size=96,
        teacher="small",
        max_epochs=2,
        batch_size=8,
        stream_fps=10.0,
        bench_runs=20,
        calib_images=8,
    ),
}

# The hybrid's weights of configs/bench_distill.yaml (each term starts at about a third of
# the detection loss per image).
DEMO_KD = ("kd.weights.logit=0.5", "kd.weights.ld=0.25", "kd.weights.feature=2.0")

DEMO_BUDGET = """# The demo's budget (checked by `understudy bench`): generous on purpose, since the
# demo's models train for a few minutes only. See configs/ for the benchmark's budgets.
latency:
  p99_ms: 200.0
  batch: 1
min_speedup: 1.5
min_accuracy_retention: 0.5
"""

# Fixed seconds of the stages after training, beyond what scales with the measured
# forward pass (ONNX export and checks, ONNX Runtime sessions, the server's start), and
# ONNX Runtime's seconds per image end to end (decoding, letterbox, inference at batch 1,
# NMS) against the torch forward pass's per image in a batch. Measured on a quiet 2-core
# AVX2 machine (export 8 s, serving + streaming 6 s, gate 15 s with a medium teacher),
# with some room.
EXPORT_FIXED_S = 8.0
SERVE_FIXED_S = 2.0
GATE_FIXED_S = 5.0
RUNTIME_PER_FORWARD = 1.2


def run_demo(
    out: str | Path = "runs/demo",
    profile: str = "demo",
    seed: int = 0,
    minutes: float = 10.0,
    scratch: bool = False,
) -> int:
    """Run every stage within ``minutes``; returns 0 when the pipeline ran (the gate's
    verdict is reported). ``scratch``: train a scratch student afterwards, outside the
    budget, and compare."""
    from distill.data.synth import generate

    p, out = PROFILES[profile], Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages()
    with stages("data", "synthetic data"):
        data = generate(out / "data", seed, p.synth)
    with stages("plan", f"measure training speed, plan {minutes:g} minutes"):
        plan = _plan(p, data, seed, minutes * 60.0, stages.elapsed())
    print(format_plan(plan, {"teacher": p.teacher, "student": "nano, distilled"}), flush=True)
    with stages("teacher", f"teacher ({p.teacher}, {epochs_text(plan.teacher_epochs)})"):
        teacher_pt = _train_teacher(p, data, out, seed, plan.teacher_epochs)
    epochs, note = replan_student(plan, stages.elapsed(), stages.times["teacher"])
    print(f"\nre-plan: {note}", flush=True)
    heading = f"student (nano, hybrid distillation + unlabelled frames, {epochs_text(epochs)})"
    with stages("student", heading):
        student_pt = _distil_student(p, data, out, teacher_pt, seed, epochs)
    with stages("export", "export ONNX + INT8"):
        student_onnx, teacher_onnx = _export(p, data, out, student_pt, teacher_pt)
    with stages("serve + stream", "serve + stream the synthetic video"):
        stream_summary = _serve_and_stream(student_onnx, data / "video.mp4", out, p.stream_fps)
    with stages("gate", "budget gate (student vs teacher)"):
        gate = _budget_gate(p, data, out, student_onnx, teacher_onnx)
    took = dict(stages.times)
    scratch_line = _scratch(p, data, out, seed, epochs, student_pt) if scratch else ""
    final = replace(plan, student_epochs=epochs)  # the student's stage as re-planned
    _summary(out, final, took, stream_summary, gate, scratch_line)
    return 0


class _Stages:
    """``with stages(name, heading):`` prints the heading and keeps the stage's wall time
    (s) under ``name``."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return time.perf_counter() - self.start

    @contextmanager
    def __call__(self, name: str, heading: str) -> Iterator[None]:
        print(f"\n== {heading}", flush=True)
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start


def _plan(p: DemoProfile, data: Path, seed: int, budget_s: float, data_s: float) -> Plan:
    """Measure both models' training speed and plan their epochs within ``budget_s``;
    ``data_s`` seconds of it are gone already."""
    from distill.demo_probe import measure_costs
    from runtime.data.dataset import load_split

    t0 = time.perf_counter()
    teacher_cfg, student_cfg = (
        _teacher_cfg(p, seed, p.max_epochs),
        _student_cfg(p, seed, p.max_epochs),
    )
    teacher, student, per_image = measure_costs(teacher_cfg, student_cfg, data, data / "unlabelled")
    after = _after_estimates(p, per_image, len(load_split(data, "val").records))
    spent = {"data": data_s, "plan": time.perf_counter() - t0}
    plan = plan_budget(budget_s, spent, teacher, student, after, p.max_epochs)
    forward = (
        f"forward pass: teacher {per_image['teacher'] * 1000:.1f} ms/image, student "
        f"{per_image['student'] * 1000:.1f} (the evaluation, export, serving and gate "
        "estimates scale with it)"
    )
    return replace(plan, notes=(forward, *plan.notes))


def _after_estimates(p: DemoProfile, per_image: dict[str, float], n_val: int) -> dict[str, float]:
    """Seconds of the stages after training, from the seconds per image of the student's
    and the teacher's forward pass (``RUNTIME_PER_FORWARD`` of it per image end to end)."""
    s, t = (RUNTIME_PER_FORWARD * per_image[k] for k in ("student", "teacher"))
    frames = p.synth.video_frames
    return {
        # each model's parity check: 8 images through torch and ONNX Runtime; calibration
        "export": EXPORT_FIXED_S + 8 * (s + t) + p.calib_images * s,
        "serve + stream": SERVE_FIXED_S + frames / p.stream_fps + (20 + frames) * s,
        "gate": GATE_FIXED_S + (p.bench_runs + 10 + n_val) * (s + t),
    }


def _common(p: DemoProfile, seed: int) -> list[str]:
    """The config overrides the teacher and the student share."""
    return [
        f"img_size={p.img_size}",
        f"batch_size={p.batch_size}",
        f"seed={seed}",
        "warmup_epochs=0.5",
        "close_mosaic=1",
    ]


def _teacher_cfg(p: DemoProfile, seed: int, epochs: int):
    from distill.train_config import TrainConfig

    return load(TrainConfig, None, [f"model={p.teacher}", f"epochs={epochs}", *_common(p, seed)])


def _student_cfg(p: DemoProfile, seed: int, epochs: int):
    """A nano student, hybrid-distilled with unlabelled frames."""
    from distill.distillation import DistillConfig

    overrides = [
        "model=nano",
        f"epochs={epochs}",
        *_common(p, seed),
        *DEMO_KD,
        f"kd.unlabelled_ratio={p.unlabelled_ratio}",
    ]
    return load(DistillConfig, None, overrides)


def _train_teacher(p: DemoProfile, data: Path, out: Path, seed: int, epochs: int) -> Path:
    from distill.train import train

    return train(_teacher_cfg(p, seed, epochs), data, out / "teacher")


def _distil_student(
    p: DemoProfile, data: Path, out: Path, teacher_pt: Path, seed: int, epochs: int
) -> Path:
    """A nano student, hybrid-distilled from ``teacher_pt`` with unlabelled frames."""
    from distill.distillation import distill

    cfg = _student_cfg(p, seed, epochs)
    return distill(
        cfg, str(teacher_pt), str(data), str(out / "student"), unlabelled=str(data / "unlabelled")
    )


def _scratch(p: DemoProfile, data: Path, out: Path, seed: int, epochs: int, student: Path) -> str:
    """Train the distilled student's scratch counterpart (nano, the same keys and epochs,
    no teacher and no unlabelled frames); a line comparing their mAP50-95 on val."""
    from distill.checkpoint import read_checkpoint
    from distill.train import train
    from distill.train_config import TrainConfig

    heading = f"scratch student (nano alone, {epochs_text(epochs)}; outside the budget)"
    print(f"\n== {heading}", flush=True)
    t0 = time.perf_counter()
    cfg = load(TrainConfig, None, ["model=nano", f"epochs={epochs}", *_common(p, seed)])
    scratch_pt = train(cfg, data, out / "scratch")
    took = time.perf_counter() - t0
    m_scratch = read_checkpoint(scratch_pt)["metrics"]["map50_95"]
    m_student = read_checkpoint(student)["metrics"]["map50_95"]
    return (
        f"distilled student {m_student:.2f} vs scratch {m_scratch:.2f} mAP50-95 on val "
        f"({m_student - m_scratch:+.2f}; scratch trained {took:.0f} s, outside the budget)"
    )


def _export(
    p: DemoProfile, data: Path, out: Path, student_pt: Path, teacher_pt: Path
) -> tuple[Path, Path]:
    """(student.onnx, teacher.onnx), and the student's INT8 Q/DQ model beside them."""
    from distill.export import export_onnx
    from distill.quantize import quantize_int8

    student_onnx = export_onnx(student_pt, out / "student.onnx", img_size=p.img_size).path
    teacher_onnx = export_onnx(teacher_pt, out / "teacher.onnx", img_size=p.img_size).path
    int8 = quantize_int8(
        student_onnx, out / "student.int8.onnx", data / "images" / "val", num_images=p.calib_images
    )
    print(f"wrote {student_onnx}, {teacher_onnx}, {int8.path}")
    return student_onnx, teacher_onnx


def _budget_gate(
    p: DemoProfile, data: Path, out: Path, student_onnx: Path, teacher_onnx: Path
) -> int:
    """``understudy bench`` of student vs teacher against the demo's budget; its exit code."""
    from runtime.cli import main as cli
    from runtime.files import write_atomic

    write_atomic(out / "budget.yaml", DEMO_BUDGET)
    return cli(
        [
            "bench",
            "--student",
            str(student_onnx),
            "--teacher",
            str(teacher_onnx),
            "--budget",
            str(out / "budget.yaml"),
            "--data",
            str(data),
            "--runs",
            str(p.bench_runs),
            "--out",
            str(out / "bench"),
        ]
    )


def _serve_and_stream(model: Path, video: Path, out: Path, fps: float) -> str:
    from runtime.cli import main as cli
    from runtime.pipeline import Detector
    from runtime.server import build_server
    from runtime.server_config import ServerConfig

    server = build_server(lambda: Detector(model), ServerConfig(port=0))
    try:
        if not server.wait_ready(timeout=120):
            raise RuntimeError("the demo server did not become ready in 120 s")
        print(f"serving {model.name} on {server.target}")
        code = cli(
            [
                "stream",
                str(video),
                "--server",
                server.target,
                "--fps",
                str(fps),
                "--out",
                str(out / "stream.mp4"),
                "--budget-ms",
                "100",
                "--json",
                str(out / "stream.json"),
            ]
        )
        return "ok" if code == 0 else f"stream exited {code}"
    finally:
        server.stop(grace=2.0)


def _summary(
    out: Path, plan: Plan, took: dict[str, float], stream: str, gate: int, scratch: str
) -> None:
    """The models side by side, the gate, the budget (planned vs taken per stage), files."""
    import json

    bench = json.loads((out / "bench" / "budget.json").read_text())
    s, t = bench["student"], bench["teacher"] or {}
    print("\n== summary")
    print(f"{'':<22}{'student (nano)':>18}{'teacher':>18}")
    for key in ("p50_ms", "p99_ms", "map50_95", "map50"):
        print(f"{key:<22}{_f(s.get(key)):>18}{_f(t.get(key)):>18}")
    print(f"budget gate: {'PASSED' if gate == 0 else 'FAILED'} - {bench['summary']}")
    print(f"stream: {stream}")
    if scratch:
        print(f"scratch: {scratch}")
    print(f"time budget: {plan.budget_s / 60:.1f} min, split: {split_line(plan)}")
    print(f"epochs: teacher {plan.teacher_epochs}, student {plan.student_epochs}")
    print(f"{'stage':<16}{'planned s':>10}{'took s':>10}")
    planned = plan.stages
    for name, seconds in took.items():
        print(f"{name:<16}{planned.get(name, 0.0):>10.0f}{seconds:>10.0f}")
    total = sum(took.values())
    verdict = "within" if total <= plan.budget_s else "OVER"
    print(
        f"{'total':<16}{plan.total_s:>10.0f}{total:>10.0f}  "
        f"({total / 60:.1f} min, {verdict} the {plan.budget_s / 60:.1f} min budget)"
    )
    print("\nfiles written:")
    for path in sorted(out.glob("*")):
        if path.name != "data":
            print(f"  {path}")
    print(f"  {out / 'data'}/ (synthetic dataset)")


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"
