"""`understudy models`: parameters and FLOPs of every preset."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model presets with params and GFLOPs")
    p.add_argument("--size", type=int, default=320, help="square input size (default 320)")
    p.add_argument("--classes", type=int, default=8, help="number of classes (default 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.models.flops import count_flops, count_params
    from distill.models.presets import PRESETS, build_detector

    print(
        f"input {args.size}x{args.size}, {args.classes} classes; "
        "GFLOPs = 2 x GMACs of convolutions/matmuls at batch 1"
    )
    print(
        f"{'preset':<8} {'width':>6} {'depth':>6} {'params (M)':>11} {'GFLOPs':>8} {'vs nano':>8}"
    )
    nano_flops = None
    for name, scale in PRESETS.items():
        model = build_detector(scale, args.classes)
        flops = count_flops(model, args.size)
        nano_flops = nano_flops or flops
        print(
            f"{name:<8} {scale.width:>6.3g} {scale.depth:>6.3g} "
            f"{count_params(model) / 1e6:>11.2f} {flops / 1e9:>8.3f} {flops / nano_flops:>7.1f}x"
        )
    return 0
