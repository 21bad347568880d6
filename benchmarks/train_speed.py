"""Training throughput with and without bf16 autocast (the speed-up the training loop's
`bf16: auto` buys on this CPU). One optimizer step = forward + loss + backward + AdamW
step on a real augmented batch of the standard synth data; median of N steps after
warm-up, fp32 and bf16 steps interleaved so both see the same machine state.

    python -m benchmarks.train_speed [--presets nano large] [--size 256] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import command_line
from distill.data.torch_dataset import DetectionDataset, collate
from distill.losses.detection import detection_loss
from distill.models.presets import build
from runtime.data.dataset import load_split
from runtime.files import write_atomic, write_json_atomic
from runtime.measure import machine, markdown_table, today

RESULTS = Path(__file__).resolve().parent / "results"


def step_seconds(model, opt, images, targets, bf16: bool) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(images)
    loss, _, _ = detection_loss(out, targets, model.strides)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__)
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--presets", nargs="+", default=["nano", "large"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=str(RESULTS / "train_speed.json"))
    args = ap.parse_args(argv)
    split = load_split(args.data, "train")
    split = replace(split, records=split.records[: args.batch * 4])
    ds = DetectionDataset(split, args.size, augment=True)
    batches = [collate([ds[i * args.batch + j] for j in range(args.batch)]) for i in range(4)]
    rows = []
    for preset in args.presets:
        torch.manual_seed(0)
        model = build(preset, len(split.class_names))
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.steps + 2):
            for bf16 in (False, True):
                images, targets, _ = batches[i % len(batches)]
                t = step_seconds(model, opt, images, targets, bf16)
                if i >= 2:  # warm-up
                    times[bf16].append(t)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows.append(
            {
                "model": preset,
                "input": f"{args.size}x{args.size}",
                "batch": args.batch,
                "fp32_images_per_s": round(args.batch / med[False], 1),
                "bf16_images_per_s": round(args.batch / med[True], 1),
                "bf16_speedup": round(med[False] / med[True], 2),
            }
        )
        print(rows[-1], flush=True)
    doc = {
        "command": command_line("train_speed", argv),
        "machine": machine(),
        "date": today(),
        "rows": rows,
    }
    write_json_atomic(args.out, doc)
    cols = [
        ("model", "model"),
        ("input", "input"),
        ("batch", "batch"),
        ("fp32_images_per_s", "fp32 img/s"),
        ("bf16_images_per_s", "bf16 img/s"),
        ("bf16_speedup", "bf16 speed-up"),
    ]
    md = [
        f"# Training throughput, fp32 vs bf16 autocast ({doc['date']})",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}",
        "",
        *markdown_table(rows, cols),
    ]
    write_atomic(Path(args.out).with_suffix(".md"), "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
