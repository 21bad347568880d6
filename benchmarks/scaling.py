"""Throughput of training across processes: images/s of nano training and of hybrid
distillation from a large teacher, with 1 and 2 processes under torchrun on this CPU
(gloo). Each process trains on ``--batch`` images per step (the global batch is
processes x batch; for distillation half of them unlabelled frames, the teacher running in
every process on its own share). A step's time is that of the training loop's own steps
(:func:`distill.train.measure_steps`: loading, augmentation, teacher, forward, loss,
backward, the gradient all-reduce and the optimizer), averaged over ``--steps`` steps
after ``--warmup``; images/s = global batch / step time, and the scaling efficiency is
images/s at N processes / (N x images/s at 1). The teacher is an untrained ``large``
checkpoint: its weights do not change its time. Data: a small synth set made here.

GPU rows (1, 2, 4, 8 GPUs, nccl) are measured where a multi-GPU machine runs this
benchmark; elsewhere they say that none was available.

    python -m benchmarks.scaling [--size 256] [--batch 8] [--steps 6] [--processes 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import command_line
from runtime.files import write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, today

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {"train": "nano training", "distill": "nano hybrid distillation, large teacher"}


def _prepare(folder: Path) -> tuple[Path, Path]:
    """A small synth dataset and an untrained ``large`` teacher checkpoint in ``folder``."""
    from distill.checkpoint import make_checkpoint, save_atomic
    from distill.data.synth import generate
    from distill.data.synth_config import SynthConfig
    from distill.models.presets import PRESETS, build_detector
    from runtime.data.dataset import load_split

    data = generate(folder / "data", seed=0, config=SynthConfig(train=128, val=8, unlabelled=96))
    names = load_split(data, "val").class_names
    torch.manual_seed(0)
    teacher = build_detector(PRESETS["large"], len(names))
    path = folder / "large.pt"
    ckpt = make_checkpoint(
        teacher, preset="large", scale=PRESETS["large"], class_names=names, img_size=256
    )
    save_atomic(ckpt, path)
    return data, path


def _worker(args: argparse.Namespace) -> None:
    """One process of a measurement (run by torchrun): time the loop's steps and, in
    process 0, write them to ``--result``."""
    from distill.config import load
    from distill.distillation import DistillConfig, measure_distill_steps
    from distill.train import measure_steps
    from distill.train_config import TrainConfig

    keys = [
        "model=nano",
        f"img_size={args.size}",
        f"batch_size={args.batch}",
        "epochs=1",
        "close_mosaic=0",
    ]
    if args.worker == "train":
        timing = measure_steps(
            load(TrainConfig, None, keys), args.data, steps=args.steps, warmup=args.warmup
        )
    else:
        cfg = load(DistillConfig, None, [*keys, "kd.method=hybrid"])
        frames = str(Path(args.data) / "unlabelled")
        timing = measure_distill_steps(cfg, args.teacher, args.data, frames)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.result).write_text(json.dumps({"seconds_per_step": timing.seconds_per_step}))


def _measure(task: str, processes: int, args: argparse.Namespace, data, teacher, tmp) -> dict:
    result = Path(tmp) / f"{task}-{processes}.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "benchmarks.scaling",
        "--worker",
        task,
        "--data",
        str(data),
        "--teacher",
        str(teacher),
        "--result",
        str(result),
        *("--size", str(args.size), "--batch", str(args.batch)),
        *("--steps", str(args.steps), "--warmup", str(args.warmup)),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU rows
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    seconds = json.loads(result.read_text())["seconds_per_step"]
    global_batch = processes * args.batch
    return {
        "task": TASKS[task],
        "device": "cpu",
        "backend": "gloo" if processes > 1 else "-",
        "processes": processes,
        "batch_per_process": args.batch,
        "global_batch": global_batch,
        "input": f"{args.size}x{args.size}",
        "seconds_per_step": round(seconds, 3),
        "images_per_s": round(global_batch / seconds, 2),
    }


def _gpu_rows(args: argparse.Namespace) -> list[dict]:
    note = (
        "not measured: no multi-GPU machine was available to this run"
        if torch.cuda.device_count() < 2
        else "not measured by this script's CPU run; run it on the GPU machine"
    )
    return [
        {
            "task": TASKS[task],
            "device": "cuda",
            "backend": "nccl",
            "processes": n,
            "batch_per_process": args.batch,
            "global_batch": n * args.batch,
            "input": f"{args.size}x{args.size}",
            "seconds_per_step": None,
            "images_per_s": None,
            "note": note,
        }
        for task in TASKS
        for n in (1, 2, 4, 8)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="images per process and step")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(RESULTS / "scaling.json"))
    ap.add_argument("--worker", choices=sorted(TASKS), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--teacher", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data, teacher = _prepare(Path(tmp))
        for task in TASKS:
            for n in args.processes:
                rows.append(_measure(task, n, args, data, teacher, tmp))
                one = next(r for r in rows if r["task"] == TASKS[task] and r["processes"] == 1)
                rows[-1]["scaling_efficiency"] = round(
                    rows[-1]["images_per_s"] / (n * one["images_per_s"]), 2
                )
                print(rows[-1], flush=True)
    rows += _gpu_rows(args)
    doc = {
        "command": command_line("scaling", argv),
        "machine": machine(),
        "date": today(),
        "load_average_at_start": round(load, 2),
        "rows": rows,
    }
    write_json_atomic(args.out, doc)
    _write_markdown(doc, Path(args.out).with_suffix(".md"))
    return 0


def _write_markdown(doc: dict, path: Path) -> None:
    cols = [
        ("task", "task"),
        ("device", "device"),
        ("processes", "processes"),
        ("global_batch", "global batch"),
        ("input", "input"),
        ("seconds_per_step", "s/step"),
        ("images_per_s", "images/s"),
        ("scaling_efficiency", "efficiency"),
    ]
    measured = [r for r in doc["rows"] if r["images_per_s"] is not None]
    missing = [r for r in doc["rows"] if r["images_per_s"] is None]
    md = [
        f"# Training across processes (torchrun), images/s ({doc['date']})",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}  ",
        f"Load average at start: {doc['load_average_at_start']}",
        "",
        *markdown_table(measured, cols),
        "",
        "Efficiency: images/s at N processes / (N x images/s at 1 process). Each process "
        "trains on its batch; the global batch is processes x batch. On a CPU, N processes "
        "share the cores (torch threads = cores / N) where one process uses them all: on a "
        "machine of few cores the CPU rows show what DDP's communication costs (the gradient "
        "all-reduce, and BatchNorm's global statistics: four small all-reduces per layer and "
        "step, two forward, two backward) more than scaling onto more hardware.",
    ]
    if missing:
        gpus = sorted({r["processes"] for r in missing})
        md += ["", f"GPU rows ({', '.join(map(str, gpus))} GPUs, nccl): {missing[0]['note']}."]
    write_atomic(path, "\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
