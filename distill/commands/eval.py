"""`understudy eval`: COCO mAP of a checkpoint or an ONNX model on a dataset split."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO mAP50-95 / mAP50 / per-class AP (pycocotools)")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or exported model (.onnx)")
    p.add_argument("--data", required=True, help="dataset (data.yaml, folder or COCO json)")
    p.add_argument("--split", default="val")
    p.add_argument("--img-size", type=int, help="input size (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", help="write the result as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from distill.evaluate import evaluate_path
    from runtime.data.dataset import load_split
    from runtime.evaluate import require_eval_packages

    require_eval_packages("eval")
    split = load_split(args.data, args.split)
    result = evaluate_path(args.model, split, img_size=args.img_size, batch_size=args.batch_size)
    print(result.table())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {path}")
    return 0
