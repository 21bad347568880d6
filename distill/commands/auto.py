"""`understudy auto`: choose and distil the student that meets a latency budget."""

from __future__ import annotations

import argparse
import shlex
import sys

from distill.commands.distill import add_teacher_check_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "auto",
        help="choose the student (and teacher) for a latency budget, distil and gate it",
        description="1) Latency screen: build the grid's candidate students with random "
        "weights, export them and measure them on --backend on this machine; keep those that "
        "meet the budget's latency lines. 2) Teacher screen (several --teachers): a short "
        "equal-budget distillation proxy per teacher, ranked by mAP50-95. 3) Distil the "
        "largest budget-meeting student (or the top-k) from the best teacher, export it and "
        "run the budget gate. Before distilling, the teacher check: with --baseline (the student "
        "trained alone) the teacher must lead it by --teacher-margin mAP50-95 points, else the "
        "run stops (exit 1) unless --force. Writes OUT/report.{md,json} and OUT/frontier.png; "
        "re-running with the same OUT reuses every finished piece. Exit 1 when no candidate "
        "meets the budget or the final student fails the gate.",
    )
    p.add_argument("--data", required=True, help="dataset (data.yaml, folder or COCO json)")
    p.add_argument("--budget", required=True, help="budget YAML (latency.p50_ms/p99_ms, ...)")
    p.add_argument(
        "--backend",
        default="onnxruntime",
        choices=("onnxruntime", "tensorrt"),
        help="where latency is measured: onnxruntime (this CPU) or tensorrt (run on the Jetson)",
    )
    p.add_argument(
        "--teachers",
        nargs="+",
        default=[],
        metavar="TEACHER",
        help="teacher checkpoints (.pt) or ONNX files; none: stop after the latency screen",
    )
    p.add_argument("--unlabelled", help="folder of unlabelled frames for distillation")
    p.add_argument("--out", required=True, help="output folder (reused on a re-run)")
    p.add_argument("--grid", help="candidate grid YAML (default configs/auto_grid.yaml)")
    p.add_argument("--top-k", type=int, default=1, help="distil the K largest candidates (1)")
    p.add_argument("--proxy-epochs", type=int, default=3, help="epochs of a teacher proxy (3)")
    p.add_argument(
        "--proxy-fraction",
        type=float,
        default=0.25,
        help="share of the labelled images a teacher proxy trains on (0.25)",
    )
    p.add_argument("--config", help="distillation config YAML (keys of DistillConfig)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a distillation config key, e.g. --set epochs=10",
    )
    p.add_argument("--threads", type=int, help="backend intra-op threads (default: its own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_teacher_check_args(p, scratch=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.auto.run import AutoOptions, NoCandidateMeetsBudget, run_auto

    command = command_line(args)
    opts = AutoOptions(
        data=args.data,
        budget=args.budget,
        out=args.out,
        backend=args.backend,
        teachers=tuple(args.teachers),
        unlabelled=args.unlabelled,
        grid=args.grid,
        top_k=args.top_k,
        proxy_epochs=args.proxy_epochs,
        proxy_fraction=args.proxy_fraction,
        config=args.config,
        overrides=tuple(args.set),
        threads=args.threads,
        progress=not args.no_progress,
        command=command,
        baseline=args.baseline,
        teacher_margin=args.teacher_margin,
        force=args.force,
    )
    try:
        report = run_auto(opts)
    except NoCandidateMeetsBudget as e:
        print(f"understudy auto: {e}", file=sys.stderr)
        print(f"report: {opts.out}/report.md", file=sys.stderr)
        return 1
    print(report.message)
    print(f"report: {opts.out}/report.md")
    return 0 if report.status in ("passed", "screen_only") else 1


def command_line(args: argparse.Namespace) -> str:
    """The run's options as one canonical command line (for the report)."""
    parts = [
        "understudy",
        "auto",
        "--data",
        args.data,
        "--budget",
        args.budget,
        "--backend",
        args.backend,
    ]
    if args.teachers:
        parts += ["--teachers", *args.teachers]
    for flag, value in (
        ("--unlabelled", args.unlabelled),
        ("--baseline", args.baseline),
        ("--grid", args.grid),
        ("--config", args.config),
        ("--threads", args.threads),
    ):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--top-k", str(args.top_k)]
    if len(args.teachers) > 1:
        parts += [
            "--proxy-epochs",
            str(args.proxy_epochs),
            "--proxy-fraction",
            str(args.proxy_fraction),
        ]
    if args.baseline:
        parts += ["--teacher-margin", f"{args.teacher_margin:g}"]
    if args.force:
        parts.append("--force")
    for item in args.set:
        parts += ["--set", item]
    return shlex.join([*parts, "--out", args.out])
