"""`understudy eval`: COCO mAP of a checkpoint or an ONNX model on a dataset split."""

from __future__ import annotations

import argparse

from distill.commands.data import add_skip_bad_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO mAP50-95 / mAP50 / per-class AP (pycocotools)")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or exported model (.onnx)")
    p.add_argument("--data", required=True, help="dataset (data.yaml, folder or COCO json)")
    p.add_argument("--split", default="val")
    p.add_argument("--img-size", type=int, help="input size (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", help="write the result as JSON here")
    add_skip_bad_arg(p, "they are listed in <DATA name>.skipped.json beside DATA")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from distill.evaluate import evaluate_path
    from runtime.data.dataset import load_split
    from runtime.data.verify import (
        drop_undecodable,
        log_skipped,
        report_beside,
        report_summary,
        write_skip_report,
    )
    from runtime.evaluate import require_eval_packages

    require_eval_packages("eval")
    split = load_split(args.data, args.split, skip_bad=args.skip_bad)
    if args.skip_bad:  # undecodable images leave the ground truth too, before evaluating
        split = drop_undecodable(split, skip_bad=True)
        log_skipped({args.split: split.skipped})
        report = write_skip_report(report_beside(args.data), args.data, {args.split: split.skipped})
    result = evaluate_path(args.model, split, img_size=args.img_size, batch_size=args.batch_size)
    print(result.table())
    if args.skip_bad:
        print(report_summary(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {path}")
    return 0
