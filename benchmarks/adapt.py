"""Site adaptation benchmark: does ``understudy adapt`` make the deployed student better
at a new site without forgetting the original data?

1. A **site** is the standard synth scenes under a shift the student never saw
   (:class:`distill.data.synth_shift.SiteShift`: a tiled / brick background family and a
   sodium-light colour cast): ``--site-train`` unlabelled-in-practice frames (the camera's
   footage) and ``--site-val`` labelled frames held out for scoring (other scenes of the
   same site; the generator knows their truth).
2. The site footage becomes a **site video** (each frame held ``--hold`` video frames)
   and is streamed (``understudy stream --camera-id site``) through ``understudy serve``
   with the deployed student and ``--shadow-teacher``, ``--shadow-every 1``,
   ``--shadow-save-dir``: the saved disagreements are the site frames adapt gets.
3. ``understudy adapt`` runs on that folder (wall time measured) with ``--site-labels``
   = the site's labelled val split, so its report scores deployed and adapted on
   held-out labelled site frames and on the original val split.

Results (``benchmarks/results/adapt.{json,md,png}``): rows for the deployed and adapted
students (and the teacher, for reference): mAP50-95 / mAP50 on the labelled site frames
and on the original val split, agreement with the teacher on the held-out site frames;
the adapt wall time, the gate's verdict and the targets (+5 mAP50-95 on the site, at
most 1 point lost on the original val split, under 20 minutes).

Standard scale (the accuracy benchmark's teacher and hybrid nano student)::

    python -m benchmarks.adapt --teacher runs/bench/teacher/model.pt \\
        --student runs/bench/hybrid-s0/model.pt --data data/synth

``--reduced`` trains its own small teacher and nano student on a small synth set at a
small input size first (minutes instead of hours; say so when quoting its numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import command_line
from distill.adapt.report import budget_text
from runtime.files import save_figure, write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, today

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHIFT = {"background": "tiles", "cast": (1.25, 0.95, 0.6)}
# the reduced configuration: what trains in minutes on a 2-core CPU
REDUCED_SYNTH = {"unlabelled": 0, "video_frames": 0, "min_size": 16.0}
REDUCED_TRAIN = ["img_size=160", "batch_size=16", "bf16=auto", "eval_every=0"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/synth", help="the original synth dataset")
    ap.add_argument("--teacher", default="runs/bench/teacher/model.pt")
    ap.add_argument(
        "--student", default="runs/bench/hybrid-s0/model.pt", help="the deployed student"
    )
    ap.add_argument(
        "--runs",
        help="work folder (default runs/bench/adapt, with --reduced runs/bench/adapt-reduced)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--site-train", type=int, default=1000, help="site footage images")
    ap.add_argument("--site-val", type=int, default=400, help="labelled held-out site images")
    ap.add_argument("--hold", type=int, default=2, help="video frames per site image")
    ap.add_argument("--fps", type=float, default=10.0, help="streaming rate of the site video")
    ap.add_argument("--below-f1", type=float, default=1.0, help="--shadow-save-below-f1")
    ap.add_argument("--serve-threshold", type=float, default=0.25, help="serve's --score-threshold")
    ap.add_argument("--set", action="append", default=[], help="adapt setting, e.g. epochs=4")
    ap.add_argument(
        "--minutes",
        type=float,
        default=18.0,
        help="adapt's time budget (its --minutes; 0: none): inside the 20-minute target, "
        "with room for the process's start",
    )
    ap.add_argument(
        "--reduced",
        action="store_true",
        help="train a small teacher and nano student on a small synth set first",
    )
    ap.add_argument("--teacher-preset", default="small", help="--reduced: the teacher's preset")
    ap.add_argument("--reduced-train", type=int, default=400, help="--reduced: train images")
    ap.add_argument("--reduced-val", type=int, default=100, help="--reduced: val images")
    ap.add_argument("--teacher-epochs", type=int, default=10, help="--reduced")
    ap.add_argument("--student-epochs", type=int, default=10, help="--reduced")
    ap.add_argument("--out", default=str(RESULTS / "adapt.json"))
    return ap


def reduced_models(args: argparse.Namespace, runs: Path) -> tuple[Path, Path, Path]:
    """--reduced: (data, teacher, student) trained here, reused when already there."""
    from distill.config import load
    from distill.data.synth import generate
    from distill.data.synth_config import SynthConfig
    from distill.distillation import DistillConfig, distill
    from distill.train import train
    from distill.train_config import TrainConfig

    sizes = {"train": args.reduced_train, "val": args.reduced_val}
    data = generate(runs / "synth", args.seed, SynthConfig(**REDUCED_SYNTH, **sizes))
    teacher = runs / "teacher" / "model.pt"
    if not teacher.is_file():
        over = [f"model={args.teacher_preset}", f"epochs={args.teacher_epochs}", *REDUCED_TRAIN]
        train(load(TrainConfig, None, over), data, runs / "teacher", resume=True, progress=False)
    student = runs / "student" / "model.pt"
    if not student.is_file():
        over = [f"epochs={args.student_epochs}", *REDUCED_TRAIN]
        cfg = load(DistillConfig, ROOT / "configs" / "bench_distill.yaml", over)
        distill(cfg, str(teacher), str(data), str(runs / "student"), resume=True, progress=False)
    return data, teacher, student


def site_dataset(args: argparse.Namespace, runs: Path, reduced: bool) -> Path:
    from distill.data.synth import generate
    from distill.data.synth_config import SynthConfig
    from distill.data.synth_shift import SiteShift

    extra = {k: v for k, v in REDUCED_SYNTH.items() if k == "min_size"} if reduced else {}
    cfg = SynthConfig(
        train=args.site_train, val=args.site_val, unlabelled=0, video_frames=0, **extra
    )
    return generate(runs / "site", args.seed + 100, cfg, SiteShift(**SHIFT))


def site_video(site: Path, hold: int, fps: float) -> Path:
    """The site's footage images as one video, each held ``hold`` frames."""
    import cv2

    from runtime.video import VideoSink

    path = site / f"site_video_h{hold}_{fps:g}fps.avi"
    if path.is_file():
        return path
    sink = VideoSink(path, fps)
    for image in sorted((site / "images" / "train").glob("*.jpg")):
        frame = cv2.imread(str(image))
        for _ in range(hold):
            sink.write(frame)
    sink.close()
    return path


def shadow_run(student: Path, teacher: Path, video: Path, save: Path, args) -> dict[str, Any]:
    """Serve the deployed student with the shadow teacher, stream the site video through
    it, and count what was saved."""
    from benchmarks.stream_load import Server

    manifest = shadow_manifest(student, teacher, video, args)
    if reusable_shadow(save, manifest):
        return {"reused": True, "saved": len(list(save.glob("shadow_*.json")))}
    save.mkdir(parents=True, exist_ok=True)
    write_json_atomic(save / "manifest.json", manifest)
    server = Server(
        [
            "--model",
            str(student),
            "--shadow-teacher",
            str(teacher),
            "--shadow-every",
            "1",
            "--shadow-save-dir",
            str(save),
            "--shadow-save-below-f1",
            str(args.below_f1),
            "--score-threshold",
            str(args.serve_threshold),
        ]
    )
    t0 = time.perf_counter()
    try:
        stream = [
            sys.executable,
            "-m",
            "runtime.cli",
            "stream",
            str(video),
            "--server",
            server.target,
            "--fps",
            str(args.fps),
            "--camera-id",
            "site",
            "--budget-ms",
            "2000",
            "--json",
            str(save.parent / "stream.json"),
        ]
        subprocess.run(stream, check=True, stdout=subprocess.DEVNULL)
        time.sleep(2.0)  # the shadow teacher finishes its last frame
    finally:
        server.stop()
    return {
        "reused": False,
        "stream_seconds": round(time.perf_counter() - t0, 1),
        "saved": len(list(save.glob("shadow_*.json"))),
        "stream": json.loads((save.parent / "stream.json").read_text()),
    }


def shadow_manifest(student: Path, teacher: Path, video: Path, args) -> dict[str, Any]:
    """What a shadow folder's frames came from: the two models (file digests), the video
    and the serving settings. Frames of another run are not reused."""
    import hashlib

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    return {
        "student": digest(student),
        "teacher": digest(teacher),
        "video": f"{video.name}:{video.stat().st_size}",
        "below_f1": args.below_f1,
        "serve_threshold": args.serve_threshold,
        "fps": args.fps,
    }


def reusable_shadow(save: Path, manifest: dict[str, Any]) -> bool:
    """Whether ``save`` holds the frames of this very run (its manifest matches); a folder
    of frames from another run is an error (they are not deleted)."""
    if not (save.is_dir() and any(save.iterdir())):
        return False
    there = save / "manifest.json"
    if there.is_file() and json.loads(there.read_text()) == manifest:
        return any(save.glob("shadow_*.json"))
    raise SystemExit(
        f"{save}: holds shadow frames of another run (other models, video or settings); "
        "move it away or give another --runs"
    )


def teacher_row(teacher: Path, data: Path, site: Path) -> dict[str, Any]:
    from distill.evaluate import evaluate_path
    from runtime.data.dataset import load_split

    orig = evaluate_path(teacher, load_split(data, "val"), progress=False)
    lab = evaluate_path(teacher, load_split(site / "data.yaml", "val"), progress=False)
    return {
        "model": "teacher",
        "site_map50_95": lab.map50_95,
        "site_map50": lab.map50,
        "original_map50_95": orig.map50_95,
        "original_map50": orig.map50,
    }


def student_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in ("deployed", "adapted"):
        s = report["scores"][name]
        rows.append(
            {
                "model": name,
                "site_map50_95": s["site_labelled"]["map50_95"],
                "site_map50": s["site_labelled"]["map50"],
                "original_map50_95": s["original"]["map50_95"],
                "original_map50": s["original"]["map50"],
                "agreement_f1": s["site"]["f1"],
                "agreement_map50_95": s["site"]["map50_95"],
            }
        )
    return rows


def run_adapt(
    student, teacher, data, save, site, out, sets, minutes: float = 0.0
) -> tuple[dict[str, Any], float]:
    cmd = [
        sys.executable,
        "-m",
        "runtime.cli",
        "adapt",
        "--student",
        str(student),
        "--teacher",
        str(teacher),
        "--data",
        str(data),
        "--site",
        str(save),
        "--site-labels",
        str(site / "data.yaml"),
        "--out",
        str(out),
        "--no-progress",
    ]
    for item in sets:
        cmd += ["--set", item]
    cmd += ["--minutes", str(minutes)] if minutes > 0 else []
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    return json.loads((out / "report.json").read_text()), round(seconds, 1)


def targets(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    dep, ada = rows[0], rows[1]
    gain = round(ada["site_map50_95"] - dep["site_map50_95"], 2)
    lost = round(dep["original_map50_95"] - ada["original_map50_95"], 2)
    return {
        "site_gain_map50_95": gain,
        "site_gain_target": 5.0,
        "site_gain_met": gain >= 5.0,
        "original_lost_map50_95": lost,
        "original_lost_limit": 1.0,
        "original_met": lost <= 1.0,
        "adapt_seconds": seconds,
        "adapt_seconds_limit": 1200,
        "time_met": seconds <= 1200,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = command_line("adapt", argv)
    load_start = os.getloadavg()[0]
    runs = Path(args.runs or ("runs/bench/adapt-reduced" if args.reduced else "runs/bench/adapt"))
    if args.reduced:
        data, teacher, student = reduced_models(args, runs)
    else:
        data, teacher, student = Path(args.data), Path(args.teacher), Path(args.student)
        for p in (teacher, student):
            if not p.is_file():
                raise SystemExit(f"{p}: not found (train it with python -m benchmarks.accuracy)")
    site = site_dataset(args, runs, args.reduced)
    video = site_video(site, args.hold, args.fps)
    shadow = shadow_run(student, teacher, video, runs / "shadow", args)
    report, seconds = run_adapt(
        student, teacher, data, runs / "shadow", site, runs / "out", args.set, args.minutes
    )
    rows = [*student_rows(report), teacher_row(teacher, data, site)]
    doc = {
        "command": command,
        "machine": machine(),
        "date": today(),
        "load_average_at_start": round(load_start, 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "configuration": configuration(args, data, teacher, student, report),
        "shadow": shadow,
        "site_frames": report["site_frames"],
        "gate": report["gate"],
        "best_epoch": report["best_epoch"],
        "budget": report.get("budget"),
        "history": report["history"],
        "targets": targets(rows, seconds),
        "rows": rows,
    }
    out = Path(args.out)
    write_json_atomic(out, doc)
    write_atomic(out.with_suffix(".md"), markdown(doc))
    plot(doc, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())
    return 0


def configuration(args, data, teacher, student, report) -> dict[str, Any]:
    dc = report["distill_config"]
    return {
        "scale": "reduced" if args.reduced else "standard",
        "reduced_note": (
            f"reduced: {args.reduced_train} original train / {args.reduced_val} val images "
            f"(min object size {REDUCED_SYNTH['min_size']:g} px), a {args.teacher_preset} teacher "
            f"trained {args.teacher_epochs} epochs and a nano student distilled "
            f"{args.student_epochs} epochs (hybrid), both at 160 px; NOT the standard benchmark"
            if args.reduced
            else ""
        ),
        "data": str(data),
        "teacher": str(teacher),
        "student": str(student),
        "site_shift": SHIFT,
        "site_train_images": args.site_train,
        "site_val_images": args.site_val,
        "video_hold_frames": args.hold,
        "stream_fps": args.fps,
        "shadow_save_below_f1": args.below_f1,
        "serve_score_threshold": args.serve_threshold,
        "adapt_settings": report["config"],
        "adapt_img_size": dc["img_size"],
        "adapt_model": dc["model"],
    }


def markdown(doc: dict[str, Any]) -> str:
    t, c = doc["targets"], doc["configuration"]
    cols = [
        ("model", "model"),
        ("site_map50_95", "site mAP50-95"),
        ("site_map50", "site mAP50"),
        ("original_map50_95", "original mAP50-95"),
        ("original_map50", "original mAP50"),
        ("agreement_f1", "agreement F1"),
        ("agreement_map50_95", "agreement mAP50-95"),
    ]
    yes = {True: "met", False: "missed"}
    md = [
        f"# Site adaptation ({doc['date']}, {c['scale']} configuration)",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}; load average at start {doc['load_average_at_start']}, "
        f"at the end {doc.get('load_average_at_end', 'n/a')}",
        "",
        *([f"**{c['reduced_note']}**", ""] if c["reduced_note"] else []),
        f"Site: synth scenes with {c['site_shift']}; {c['site_train_images']} footage images "
        f"streamed as a video ({c['video_hold_frames']} frames each, {c['stream_fps']:g} fps) "
        f"through `serve --shadow-teacher --shadow-every 1 --shadow-save-below-f1 "
        f"{c['shadow_save_below_f1']:g}`: {doc['shadow']['saved']} frames saved; "
        f"{c['site_val_images']} labelled site images held out for the site mAP.",
        f"Adapt site frames by time: {doc['site_frames']}.",
        "",
        *markdown_table(doc["rows"], cols),
        "",
        f"- site mAP50-95 gain: {t['site_gain_map50_95']:+.2f} (target >= +5: "
        f"{yes[t['site_gain_met']]})",
        f"- original mAP50-95 lost: {t['original_lost_map50_95']:.2f} (target <= 1: "
        f"{yes[t['original_met']]})",
        f"- adapt wall time: {t['adapt_seconds']:.0f} s (target <= 1200 s: {yes[t['time_met']]})",
        f"- gate: {'replace' if doc['gate']['replace'] else 'keep'} "
        f"({'; '.join(doc['gate']['reasons'])})",
        f"- kept epoch {doc['best_epoch']} of {len(doc['history'])} run",
        *([f"- {budget_text(doc['budget'])}"] if doc.get("budget") else []),
    ]
    return "\n".join(md) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    keys = [("site_map50_95", "site\nmAP50-95"), ("original_map50_95", "original\nmAP50-95")]
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    colors = {"deployed": "0.55", "adapted": "tab:green", "teacher": "tab:blue"}
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(len(keys))]
        ax.bar(xs, [r[k] for k, _ in keys], width, color=colors[r["model"]], label=r["model"])
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylabel("points")
    ax.set_title(f"site adaptation ({doc['configuration']['scale']})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
