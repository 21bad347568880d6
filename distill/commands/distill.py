"""`understudy distill`: train a compact student from a teacher."""

from __future__ import annotations

import argparse

from distill.commands.train import add_common_training_args, overrides, print_skip_report

METHODS = ("hybrid", "logit", "ld", "feature", "cwd", "attention", "dense", "pseudo")
KINDS = ("understudy", "yolo", "pair", "detr")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil a student from a teacher (KD + pseudo-labels)")
    p.add_argument(
        "--teacher", required=True, help="teacher checkpoint (.pt) or ONNX detector (.onnx)"
    )
    p.add_argument("--student", default=None, help="student preset (default nano)")
    p.add_argument(
        "--method",
        choices=METHODS,
        nargs="+",
        default=None,
        help="distillation method (default hybrid); several train one student each on the "
        "same batches with one teacher pass per step, into OUT/<method>",
    )
    p.add_argument("--unlabelled", help="folder of unlabelled frames (teacher pseudo-labels + KD)")
    p.add_argument("--teacher-layout", help="YAML OutputLayout for an external ONNX teacher")
    p.add_argument(
        "--teacher-kind",
        choices=KINDS,
        help="an ONNX teacher's output layout (default: found from its graph)",
    )
    add_common_training_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.config import load
    from distill.distillation import DistillConfig, distill_many

    methods = list(dict.fromkeys(args.method or [None]))
    cfgs = []
    for method in methods:
        extra = {
            "model": args.student,
            "kd.method": method,
            "kd.teacher_layout": args.teacher_layout,
            "kd.teacher_kind": args.teacher_kind,
        }
        cfgs.append(load(DistillConfig, args.config, overrides(args, extra)))
    if len(cfgs) == 1:
        outs = [args.out or f"runs/{cfgs[0].model}-{cfgs[0].kd.method}"]
    else:
        base = args.out or f"runs/{cfgs[0].model}-methods"
        outs = [f"{base}/{c.kd.method}" for c in cfgs]
    paths = distill_many(
        cfgs,
        args.teacher,
        args.data,
        outs,
        unlabelled=args.unlabelled,
        resume=args.resume,
        progress=not args.no_progress,
    )
    for path in paths:
        print(f"wrote {path}")
    print_skip_report(cfgs[0], outs[0])
    return 0
