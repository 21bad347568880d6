"""`understudy bench`: the release gate — student vs teacher against a latency budget."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure student vs teacher on one backend and check a budget (exit 1 on failure)",
    )
    p.add_argument("--student", required=True, help="student model (.onnx, .engine, .pt)")
    p.add_argument("--teacher", help="teacher model on the same backend (for speed-up/retention)")
    p.add_argument("--budget", required=True, help="budget YAML (see runtime/budget.py)")
    p.add_argument("--data", help="dataset to evaluate both models on (accuracy retention)")
    p.add_argument(
        "--reference",
        metavar="MODEL",
        help="the student trained alone (needs --data): evaluated like the student, for the "
        "distillation gain (student minus reference mAP50-95), reported on a line of its own",
    )
    p.add_argument("--split", default="val")
    p.add_argument("--backend", help="onnxruntime | tensorrt | torch (default: by file type)")
    p.add_argument("--threads", type=int, help="intra-op threads of the CPU backend")
    p.add_argument("--frames", help="video or image folder to time on (default: synthetic)")
    p.add_argument("--frame-size", default="640x480", help="synthetic frame WxH (default 640x480)")
    p.add_argument("--runs", type=int, default=200, help="timed frames per model (default 200)")
    p.add_argument("--out", default="runs/bench", help="folder for budget.json/.md/.png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex

    from runtime.bench import (
        ModelRun,
        evaluate_gate,
        interleaved_latency,
        open_measured,
        side_by_side,
        write_report,
    )
    from runtime.budget import load_budget
    from runtime.errors import ConfigError

    budget = load_budget(args.budget)
    if budget.latency.batch != 1:
        raise ConfigError(
            f"{args.budget}: latency.batch {budget.latency.batch}: the gate times batch 1"
        )
    _check_reference(args)
    split = _eval_split(args) if args.data else None  # fail before minutes of timing
    frames = _frames(args)
    progress = not args.no_progress
    runs, dets = [], []
    for path in [args.student] + ([args.teacher] if args.teacher else []):
        det, mem = open_measured(path, args.backend, args.threads)
        runs.append(
            ModelRun(path, det.backend_name, det.precision, det.spec.input_size[0], memory_mb=mem)
        )
        dets.append(det)
    try:
        for run_, (lat, inf) in zip(
            runs, interleaved_latency(dets, frames, args.runs, progress=progress)
        ):
            run_.latencies_ms, run_.infer_ms = lat, inf
    finally:
        for det in dets:
            det.close()
    reference = [ModelRun(args.reference)] if args.reference else []
    if split is not None:
        from runtime.evaluate import evaluate_runtime

        for run_ in runs + reference:
            r = evaluate_runtime(run_.path, split, progress=progress)
            run_.map50_95, run_.map50 = r.map50_95, r.map50
    teacher = runs[1] if len(runs) > 1 else None
    result = evaluate_gate(budget, runs[0], teacher, reference[0] if args.reference else None)
    print(side_by_side(result))
    command = "understudy " + " ".join(shlex.quote(a) for a in args.argv)
    for p in write_report(result, args.out, command, budget):
        print(f"wrote {p}")
    return 0 if result.passed else 1


def _check_reference(args: argparse.Namespace) -> None:
    """A --reference needs --data and must exist (checked before minutes of timing)."""
    from pathlib import Path

    from runtime.errors import ConfigError, ModelFileError

    if args.reference is None:
        return
    if not args.data:
        raise ConfigError("--reference is scored on a dataset: pass --data too")
    if not Path(args.reference).is_file():
        raise ModelFileError(f"{args.reference}: --reference model not found")


def _eval_split(args: argparse.Namespace):
    """The ``--data`` split, once the ``eval`` extra is known to be installed."""
    from runtime.evaluate import require_eval_packages

    require_eval_packages("bench --data")
    from runtime.data.dataset import load_split

    return load_split(args.data, args.split)


def _frames(args: argparse.Namespace):
    from runtime.errors import ConfigError
    from runtime.measure import synthetic_frames

    if args.frames:
        from runtime.video import open_source

        source = open_source(args.frames, max_frames=64)
        frames = [frame for _, frame in source.frames()]
        if not frames:
            raise ConfigError(f"{args.frames}: no frames could be read")
        return frames
    try:
        w, h = (int(v) for v in args.frame_size.lower().split("x"))
    except ValueError as e:
        raise ConfigError(f"--frame-size {args.frame_size!r} must look like 640x480") from e
    return synthetic_frames(w, h, 32)
