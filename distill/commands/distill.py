"""`understudy distill`: train a compact student from a teacher."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

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
    add_teacher_check_args(p)
    p.add_argument(
        "--teacher-kind",
        choices=KINDS,
        help="an ONNX teacher's output layout (default: found from its graph)",
    )
    add_common_training_args(p)
    p.set_defaults(func=run)


def add_teacher_check_args(p: argparse.ArgumentParser, scratch: bool = True) -> None:
    """The teacher check's flags (see distill/teacher_check.py); ``scratch``: offer
    ``--baseline-epochs``."""
    from distill.teacher_check import DEFAULT_MARGIN

    p.add_argument(
        "--baseline",
        metavar="CKPT",
        help="the student trained alone (checkpoint or exported model): the teacher must "
        "beat it by --teacher-margin before distilling",
    )
    if scratch:
        p.add_argument(
            "--baseline-epochs",
            type=int,
            metavar="N",
            help="train the student alone for N epochs first (into OUT/reference) and use "
            "it as the --baseline",
        )
    p.add_argument(
        "--teacher-margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="POINTS",
        help=f"mAP50-95 points the teacher must lead the baseline by (default {DEFAULT_MARGIN:g})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="distil even when the teacher is not ahead of the baseline",
    )


def run(args: argparse.Namespace) -> int:
    from distill.config import load
    from distill.distillation import DistillConfig, distill_many
    from distill.teacher_check import TeacherNotAhead, write_distill_report

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
        base = args.out or f"runs/{cfgs[0].model}-{cfgs[0].kd.method}"
        outs = [base]
    else:
        base = args.out or f"runs/{cfgs[0].model}-methods"
        outs = [f"{base}/{c.kd.method}" for c in cfgs]
    try:
        check = teacher_check(args, cfgs[0], Path(base) / "reference")
    except TeacherNotAhead as e:
        print(f"understudy distill: {e}", file=sys.stderr)
        return 1
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
    if check is not None:
        command = shlex.join(["understudy", *getattr(args, "argv", ["distill"])])
        for cfg, out, path in zip(cfgs, outs, paths):
            info = {"command": command, "data": str(args.data), "method": cfg.kd.method}
            for p in write_distill_report(out, check, path, **info):
                print(f"wrote {p}")
    print_skip_report(cfgs[0], outs[0])
    return 0


def teacher_check(args: argparse.Namespace, cfg, scratch_dir: Path):
    """Run the teacher check of ``args`` (print its line; a ``TeacherCheck``), or None on
    the ranks of a torchrun job other than 0 (they wait for rank 0 at the process group's
    set-up). Raises ``TeacherNotAhead`` when the teacher is not ahead, unless --force."""
    import os

    from distill.teacher_check import check_teacher, is_rank_zero, scratch_reference
    from runtime.data.dataset import load_split
    from runtime.data.verify import drop_undecodable
    from runtime.errors import ConfigError

    epochs = getattr(args, "baseline_epochs", None)
    if args.baseline and epochs:
        raise ConfigError("--baseline and --baseline-epochs: pass one of them")
    if not is_rank_zero():
        return None
    if epochs and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "--baseline-epochs under torchrun: train the baseline first "
            "(`understudy train`) and pass it with --baseline"
        )
    progress = not args.no_progress
    split = load_split(args.data, "val", skip_bad=cfg.skip_bad)
    if cfg.skip_bad:
        split = drop_undecodable(split, True, progress)
    reference = args.baseline
    if epochs:
        reference = scratch_reference(cfg, args.data, scratch_dir, epochs, progress)
    check = check_teacher(
        args.teacher,
        split,
        cfg.img_size,
        reference=reference,
        margin=args.teacher_margin,
        force=args.force,
        layout_file=cfg.kd.teacher_layout or None,
        kind=cfg.kd.teacher_kind,
        progress=progress,
    )
    print(check.message)
    return check
