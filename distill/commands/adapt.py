"""`understudy adapt`: a site-specific student from the frames a vehicle saw.

Distils the deployed student further from its own weights on the teacher's pseudo-labels
and soft targets of site frames (shadow-teacher disagreements saved by ``serve
--shadow-save-dir``, video files, image folders), mixed with replayed original data;
scores deployed and adapted against the teacher on held-out (latest) site frames and on
the original val split; a gate decides which one ``OUT/student.pt`` is. See docs/adapt.md.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt the deployed student to a site's frames (shadow folders, videos, images)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--student", required=True, help="the deployed student checkpoint (.pt)")
    p.add_argument(
        "--teacher", required=True, help="teacher checkpoint (.pt) or ONNX detector (.onnx)"
    )
    p.add_argument(
        "--data", required=True, help="the original dataset (replayed; its val split scored)"
    )
    p.add_argument(
        "--site",
        required=True,
        action="append",
        help="site frames: a shadow folder, an image folder or a video (repeatable)",
    )
    p.add_argument("--out", default="runs/adapt", help="output folder (default runs/adapt)")
    p.add_argument(
        "--site-labels",
        help="a dataset whose val split is labelled site frames (scored; the gate uses it)",
    )
    p.add_argument("--teacher-layout", help="YAML OutputLayout for an external ONNX teacher")
    p.add_argument("--config", help="YAML of adapt settings (keys of AdaptConfig, docs/adapt.md)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one adapt setting, e.g. --set epochs=4 (repeatable)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="adapt even when the teacher does not lead the deployed student by "
        "teacher_margin on the original val split",
    )
    p.add_argument(
        "--minutes",
        type=float,
        help="wall-time budget of the whole run: the training is sized to fit (the setting "
        "`minutes`; docs/adapt.md)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill.adapt.config import AdaptConfig
    from distill.adapt.run import adapt
    from distill.config import load
    from distill.teacher_check import TeacherNotAhead
    from runtime.evaluate import require_eval_packages

    require_eval_packages("adapt")
    extra = [] if args.minutes is None else [f"minutes={args.minutes}"]
    cfg = load(AdaptConfig, args.config, [*args.set, *extra])
    try:
        report = adapt(
            args.student,
            args.teacher,
            args.data,
            args.site,
            args.out,
            cfg,
            site_labels=args.site_labels,
            teacher_layout=args.teacher_layout,
            force=args.force,
            progress=not args.no_progress,
        )
    except TeacherNotAhead as e:
        print(f"understudy adapt: {e}", file=sys.stderr)
        return 1
    gate = report["gate"]
    verdict = "REPLACE the deployed student" if gate["replace"] else "KEEP the deployed student"
    print(f"adapt: {verdict}")
    for reason in gate["reasons"]:
        print(f"  {reason}")
    print(f"wrote {report['student']['path']} ({report['student']['is']}) and {args.out}/report.md")
    return 0
