"""`understudy export`: checkpoint -> ONNX (+ metadata sidecar), validated against torch."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX with metadata; checks parity with torch",
        description="Export a detector checkpoint to ONNX (opset 17, input `images`, static "
        "HxW) with its ModelSpec in metadata_props and a <file>.json sidecar, then check it "
        "with onnx.checker and against torch on images (max abs diff, detections after NMS).",
    )
    p.add_argument("checkpoint", help="detector checkpoint (.pt) from train/distill")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument(
        "--size", type=int, help="square input size, multiple of 32 (default: the checkpoint's)"
    )
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis")
    p.add_argument(
        "--layout",
        default="decoded_xyxy",
        choices=("decoded_xyxy", "raw_dfl"),
        help="output layout (default decoded_xyxy: boxes + scores)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--parity-images",
        nargs="+",
        metavar="IMAGE",
        help="images for the parity check (default: the checkpoint's val split "
        "if on disk, else drawn test images)",
    )
    p.add_argument("--no-validate", action="store_true", help="skip the checker and parity check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.export import export_onnx

    report = export_onnx(
        args.checkpoint,
        args.out,
        img_size=args.size,
        dynamic_batch=args.dynamic_batch,
        layout=args.layout,
        opset=args.opset,
        validate=not args.no_validate,
        parity_image_paths=args.parity_images,
    )
    print(report.summary())
    return 0
