"""`understudy demo`: the main job end to end (synth -> teacher -> student -> ONNX/INT8 ->
server -> stream -> budget gate) on embedded defaults."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline end to end on synthetic data")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--profile",
        choices=("demo", "tiny"),
        default="demo",
        help="demo: the budgeted run; tiny: a minute or so, at most 2 epochs per model (CI)",
    )
    p.add_argument(
        "--minutes",
        type=_positive,
        default=10.0,
        help="time budget (default 10): the training epochs are chosen to fit it, from a "
        "few training steps timed on this machine; at least 1 epoch per model",
    )
    p.add_argument(
        "--scratch",
        action="store_true",
        help="afterwards, outside the budget, train a nano student alone for the same "
        "epochs and compare its mAP with the distilled one",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # torch's OpenMP threads spin while they wait for each other: on cores that other
    # processes share, a training step then takes up to 10x longer (2 cores, load average
    # 3: 7.2 s instead of 0.8 s per step; waiting passively: 0.8-1.5 s). Read once, when
    # torch is imported; a value set by the user wins.
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from distill.demo import run_demo

    return run_demo(args.out, args.profile, args.seed, args.minutes, args.scratch)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--minutes must be a number > 0, got {text!r}")
    return value
