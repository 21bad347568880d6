"""``understudy data``: generate the synthetic benchmark, check a dataset.

    understudy data synth --out DIR --seed S [--config YAML] [--train N --val N
                          --unlabelled N --video-frames N]
    understudy data check DATA [--split train val] [--no-decode] [--skip-bad]

Torch-free at import; the handlers import the data modules lazily.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SPLITS = ("train", "val", "test")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="generate the synthetic benchmark; check a dataset")
    sub = p.add_subparsers(dest="data_command", metavar="{synth,check}")
    sub.required = True

    s = sub.add_parser(
        "synth",
        help="write the deterministic synthetic dataset (YOLO + COCO, unlabelled frames, video)",
        description="Write the synthetic benchmark to DIR. Defaults are the standard "
        "benchmark (configs/synth_standard.yaml); flags override single keys of --config.",
    )
    s.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--config", type=Path, help="YAML with SynthConfig keys")
    s.add_argument("--train", type=int, help="number of training images")
    s.add_argument("--val", type=int, help="number of validation images")
    s.add_argument("--unlabelled", type=int, help="number of unlabelled frames")
    s.add_argument("--video-frames", type=int, help="number of video frames (0: no video)")
    s.set_defaults(func=run_synth)

    c = sub.add_parser(
        "check",
        help="load a dataset, decode every image, print objects per class and any damage",
        description="DATA is a dataset YAML (an Ultralytics data.yaml works), a directory "
        "with data.yaml, or a COCO JSON file. Every image is decoded (in parallel); each "
        "damaged input is named on one line and the exit status is 2, or with --skip-bad "
        "they are listed in a report beside DATA and the exit status is 0.",
    )
    c.add_argument("data", type=Path, help="dataset YAML, directory with data.yaml, or COCO JSON")
    c.add_argument(
        "--split",
        nargs="+",
        choices=SPLITS,
        help="splits to check (default: train and val; for a COCO JSON the split in its name)",
    )
    c.add_argument(
        "--no-decode",
        action="store_true",
        help="read image headers only (faster; a truncated JPEG is still found)",
    )
    add_skip_bad_arg(c, "list them in <DATA name>.skipped.json beside DATA and exit 0")
    c.set_defaults(func=run_check)


def add_skip_bad_arg(p: argparse.ArgumentParser, where: str) -> None:
    """``--skip-bad``: the same flag on data check, train, distill and eval."""
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out damaged images and images with a bad label line (each named once), "
        f"instead of stopping at the first; {where}",
    )


def run_synth(args: argparse.Namespace) -> int:
    from distill.data.synth import generate
    from distill.data.synth_config import load_synth_config

    overrides = {
        "train": args.train,
        "val": args.val,
        "unlabelled": args.unlabelled,
        "video_frames": args.video_frames,
    }
    cfg = load_synth_config(args.config, overrides)
    start = time.perf_counter()
    out = generate(args.out, args.seed, cfg)
    seconds = time.perf_counter() - start
    print(
        f"synthetic dataset in {out} ({seconds:.1f} s): train {cfg.train}, val {cfg.val}, "
        f"unlabelled {cfg.unlabelled}, video {cfg.video_frames} frames; seed {args.seed}"
    )
    print(f"  YOLO: {out / 'data.yaml'}   COCO: {out / 'coco.yaml'}")
    return 0


def default_splits(data: Path) -> tuple[str, ...]:
    """train+val, or for a COCO JSON the split its file name mentions (default val)."""
    if data.suffix.lower() == ".json":
        return next(((s,) for s in SPLITS if s in data.stem.lower()), ("val",))
    return ("train", "val")


def run_check(args: argparse.Namespace) -> int:
    from runtime.data.verify import report_beside, skip_summary, write_skip_report

    skipped, failures = {}, []
    for split_name in args.split or default_splits(args.data):
        split, failed = _check_split(args, split_name)
        skipped[split_name] = split.skipped
        failures += failed
    if args.skip_bad:
        report = write_skip_report(report_beside(args.data), args.data, skipped)
        print(f"{skip_summary(skipped)}; listed in {report}")
    for _, error in failures:
        print(f"understudy data: error: {error}", file=sys.stderr)
    return 2 if failures else 0


def _check_split(args: argparse.Namespace, split_name: str) -> tuple:
    """Load (and decode) one split and print its report; returns the split (without the
    images --skip-bad left out) and the images that do not decode (without --skip-bad)."""
    from runtime.data.dataset import load_split
    from runtime.data.verify import drop_undecodable, undecodable

    split = load_split(args.data, split_name, skip_bad=args.skip_bad)
    failed = []
    if not args.no_decode:
        if args.skip_bad:
            split = drop_undecodable(split, skip_bad=True)
        else:
            failed = undecodable(split.records, desc=f"decode {split_name}")
    counts = split.class_counts()
    empty = sum(1 for r in split.records if r.num_objects == 0)
    print(
        f"{split_name}: {len(split)} images, {int(counts.sum())} objects, "
        f"{empty} images without objects  ({split.source})"
    )
    width = max(len(n) for n in split.class_names)
    for k, (name, n) in enumerate(zip(split.class_names, counts.tolist())):
        print(f"  {k:3d} {name:<{width}} {n:8d}")
    if failed:
        print(f"  {len(failed)} of {len(split)} images do not decode (named below)")
    elif not args.no_decode:
        print(f"  all {len(split)} images decode")
    for line in split.warnings:
        print(f"  warning: {line}")
    for s in split.skipped:
        print(f"  skipped: {s.problem}")
    return split, failed
