"""`understudy train`: train a detector (a teacher, or a student from scratch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.commands.data import add_skip_bad_arg


def add_common_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="dataset: data.yaml, a folder holding one, or a COCO json"
    )
    p.add_argument("--config", help="YAML config (keys of TrainConfig; see configs/)")
    p.add_argument("--out", help="output folder (default runs/<model>)")
    p.add_argument("--epochs", type=int, help="override epochs")
    p.add_argument("--img-size", type=int, help="override img_size")
    p.add_argument("--batch-size", type=int, help="override batch_size")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set lr=0.001 --set aug.mosaic=0.5",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    add_skip_bad_arg(p, "they are listed in OUT/skipped.json (the config key skip_bad)")


def overrides(args: argparse.Namespace, extra: dict[str, object]) -> list[str]:
    items = [f"{k}={v}" for k, v in extra.items() if v is not None]
    if args.skip_bad:
        items.append("skip_bad=true")
    for key in ("epochs", "img_size", "batch_size", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            items.append(f"{key}={value}")
    return items + list(args.set)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a detector (teacher or scratch student)")
    p.add_argument("--model", default=None, help="preset: nano, small, medium, large")
    add_common_training_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.config import load
    from distill.train import train
    from distill.train_config import TrainConfig

    cfg = load(TrainConfig, args.config, overrides(args, {"model": args.model}))
    out = args.out or f"runs/{cfg.model}"
    path = train(cfg, args.data, out, resume=args.resume, progress=not args.no_progress)
    print(f"wrote {path}")
    print_skip_report(cfg, out)
    return 0


def print_skip_report(cfg, out: str) -> None:
    """With ``skip_bad``: one line, how many damaged inputs were left out and where they
    are listed."""
    from runtime.data.verify import SKIP_REPORT, report_summary

    if cfg.skip_bad:
        print(report_summary(Path(out) / SKIP_REPORT))
