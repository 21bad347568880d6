"""`understudy quantize`: fp32 ONNX -> INT8 Q/DQ ONNX (static post-training quantization)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="INT8 Q/DQ ONNX by static post-training quantization",
        description="Calibrate on N images (pre-processed as the runtime does) and write a "
        "Q/DQ ONNX: per-channel symmetric int8 weights; symmetric int8 activations for "
        "TensorRT (default) or uint8 activations for ONNX Runtime on x86 CPUs. The head's "
        "last convs and the decode tail stay float.",
    )
    p.add_argument("model", help="fp32 .onnx from `understudy export`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="dataset (data.yaml, folder with data.yaml, COCO json)")
    src.add_argument("--images", help="folder of calibration images")
    p.add_argument("--split", default="train", help="dataset split for --data (default train)")
    p.add_argument("--out", required=True, help="output .onnx path")
    p.add_argument("--num-images", type=int, default=128, help="calibration images (default 128)")
    p.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"))
    p.add_argument(
        "--activations",
        default="int8",
        choices=("int8", "uint8"),
        help="int8: symmetric, for TensorRT (default); uint8: fast in ONNX Runtime "
        "on x86, rejected by TensorRT",
    )
    p.add_argument(
        "--keep-float",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="node-name globs to keep in float, e.g. '/model/backbone/stem/*'",
    )
    p.add_argument(
        "--quantize-head",
        action="store_true",
        help="also quantize the head's last convs and decode tail (kept float by default)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.quantize import quantize_int8, speed_hint
    from runtime.measure import cpu_flags

    if args.data:
        from runtime.data.dataset import load_split

        source = load_split(args.data, args.split)
    else:
        source = args.images
    report = quantize_int8(
        args.model,
        args.out,
        source,
        num_images=args.num_images,
        method=args.method,
        keep_float=args.keep_float,
        keep_head_float=not args.quantize_head,
        activations=args.activations,
    )
    print(report.summary())
    print(f"speed: {speed_hint(args.activations, cpu_flags())}")
    return 0
