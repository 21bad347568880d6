"""`understudy demo`: the main job end to end on embedded defaults, no GPU, no downloads.

synthetic data -> teacher -> hybrid-distilled student (with unlabelled frames) -> ONNX
(+ INT8 Q/DQ) -> gRPC server -> stream the synthetic video -> budget gate comparing
teacher and student (latency and accuracy) -> summary table and the list of files.

Profiles: ``demo`` (about 10 minutes on a 2-core CPU) and ``tiny`` (a minute or two; what
the test suite and CI run). The numbers of the demo are not the benchmark's: see the
README's results table for the standard synth benchmark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distill.config import load
from distill.data.synth_config import SynthConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoProfile:
    synth: SynthConfig
    img_size: int
    teacher: str
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    stream_fps: float
    bench_runs: int
    calib_images: int
    unlabelled_ratio: float = 0.25


# The demo profile trades the benchmark's difficulty for time: objects of 14 px and more
# (the benchmark has 8), a 192 px input, a `medium` teacher (5.5x the nano's FLOPs; the
# benchmark's `large` one learns too slowly per minute of a 2-core CPU) and about 500
# steps per model, which is where such a detector starts to find most objects.
PROFILES = {
    "demo": DemoProfile(
        SynthConfig(train=800, val=150, unlabelled=300, video_frames=90, min_size=14.0),
        img_size=192,
        teacher="medium",
        teacher_epochs=10,
        student_epochs=10,
        batch_size=16,
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
        teacher_epochs=1,
        student_epochs=1,
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


def run_demo(out: str | Path = "runs/demo", profile: str = "demo", seed: int = 0) -> int:
    """Run every stage; returns 0 when the pipeline ran (the gate's verdict is reported)."""
    from distill.data.synth import generate

    p = PROFILES[profile]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages()
    with stages("data"):
        data = generate(out / "data", seed, p.synth)
    with stages("teacher"):
        teacher_pt = _train_teacher(p, data, out, seed)
    with stages("student (hybrid distillation + unlabelled frames)"):
        student_pt = _distil_student(p, data, out, teacher_pt, seed)
    with stages("export"):
        student_onnx, teacher_onnx = _export(p, data, out, student_pt, teacher_pt)
    with stages("serve + stream the synthetic video"):
        stream_summary = _serve_and_stream(student_onnx, data / "video.mp4", out, p.stream_fps)
    with stages("budget gate (student vs teacher)"):
        gate = _budget_gate(p, data, out, student_onnx, teacher_onnx)
    _summary(out, stages.times, stream_summary, gate)
    return 0


class _Stages:
    """``with stages(name):`` prints the stage's heading and keeps its wall time (s)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"\n== {name}", flush=True)
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start


def _common(p: DemoProfile, seed: int) -> list[str]:
    """The config overrides the teacher and the student share."""
    return [
        f"img_size={p.img_size}",
        f"batch_size={p.batch_size}",
        f"seed={seed}",
        "warmup_epochs=0.5",
        "close_mosaic=1",
    ]


def _train_teacher(p: DemoProfile, data: Path, out: Path, seed: int) -> Path:
    from distill.train import train
    from distill.train_config import TrainConfig

    overrides = [f"model={p.teacher}", f"epochs={p.teacher_epochs}", *_common(p, seed)]
    return train(load(TrainConfig, None, overrides), data, out / "teacher", resume=True)


def _distil_student(p: DemoProfile, data: Path, out: Path, teacher_pt: Path, seed: int) -> Path:
    """A nano student, hybrid-distilled from ``teacher_pt`` with unlabelled frames."""
    from distill.distillation import DistillConfig, distill

    scfg = load(
        DistillConfig,
        None,
        [
            "model=nano",
            f"epochs={p.student_epochs}",
            *_common(p, seed),
            *DEMO_KD,
            f"kd.unlabelled_ratio={p.unlabelled_ratio}",
        ],
    )
    return distill(
        scfg,
        str(teacher_pt),
        str(data),
        str(out / "student"),
        unlabelled=str(data / "unlabelled"),
        resume=True,
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
            ]
        )
        return "ok" if code == 0 else f"stream exited {code}"
    finally:
        server.stop(grace=2.0)


def _summary(out: Path, times: dict[str, float], stream: str, gate: int) -> None:
    import json

    bench = json.loads((out / "bench" / "budget.json").read_text())
    s, t = bench["student"], bench["teacher"] or {}
    print("\n== summary")
    print(f"{'':<22}{'student (nano)':>18}{'teacher':>18}")
    for key in ("p50_ms", "p99_ms", "map50_95", "map50"):
        print(f"{key:<22}{_f(s.get(key)):>18}{_f(t.get(key)):>18}")
    print(f"budget gate: {'PASSED' if gate == 0 else 'FAILED'} - {bench['summary']}")
    print(f"stream: {stream}")
    print("stage wall times: " + ", ".join(f"{k.split(' ')[0]} {v:.0f}s" for k, v in times.items()))
    print("\nfiles written:")
    for path in sorted(out.glob("*")):
        if path.name != "data":
            print(f"  {path}")
    print(f"  {out / 'data'}/ (synthetic dataset)")


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"
