"""`understudy demo`: the main job end to end (synth -> teacher -> student -> ONNX/INT8 ->
server -> stream -> budget gate) on embedded defaults."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline end to end on synthetic data")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--profile",
        choices=("demo", "tiny"),
        default="demo",
        help="demo: ~10 min on 2 CPU cores; tiny: a minute or two (CI)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.demo import run_demo

    return run_demo(args.out, args.profile, args.seed)
