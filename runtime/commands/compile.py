"""`understudy compile`: ONNX -> cached TensorRT engine, or `--check` without TensorRT."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="build a TensorRT engine (cached), or --check the ONNX without TensorRT",
        description="Build a TensorRT engine from an Understudy ONNX file into the engine "
        "cache (rebuilt when the ONNX, TensorRT version, GPU or precision changes, or the "
        "cached file is corrupt). --check only runs the pre-flight check (supported ops, "
        "dynamic dims, float64) and exits 1 on problems; it needs no TensorRT.",
    )
    p.add_argument("model", help=".onnx from `understudy export` or `understudy quantize`")
    p.add_argument("--check", action="store_true", help="pre-flight check only (no TensorRT)")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        help="engine precision (default: the model's; int8 needs a Q/DQ model)",
    )
    p.add_argument("--cache-dir", help="engine cache (default $XDG_CACHE_HOME/understudy/engines)")
    p.add_argument("--out", help="also copy the engine (+ .json sidecar) here, e.g. student.engine")
    p.add_argument("--workspace-mb", type=int, default=2048, help="builder workspace (MiB)")
    p.add_argument("--min-batch", type=int, help="profile minimum batch (dynamic-batch models)")
    p.add_argument("--opt-batch", type=int, help="profile batch to tune for (default: min)")
    p.add_argument("--max-batch", type=int, help="profile maximum batch (default 8)")
    p.add_argument("--verbose-trt", action="store_true", help="TensorRT's verbose log")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from runtime.engine.preflight import check_file
    from runtime.files import ensure_writable, write_atomic

    report = check_file(args.model, min_batch=args.min_batch, max_batch=args.max_batch)
    if args.check:
        print(report.table())
        return 0 if report.ok else 1
    if args.out:
        ensure_writable(args.out)  # fail now, not after a minutes-long build
    if not report.ok:
        print(
            f"pre-flight: {len(report.problems)} problem(s) for the TensorRT "
            f"{report.tensorrt_version} op list (building anyway; TensorRT decides):"
        )
        for problem in report.problems:
            print(f"  {problem}")

    from runtime.engine.cache import build_or_load_engine
    from runtime.model_spec import ModelSpec

    engine = build_or_load_engine(
        args.model,
        args.precision,
        args.cache_dir,
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        workspace_mb=args.workspace_mb,
        verbose=args.verbose_trt,
        out=print,
    )
    print(f"engine: {engine}")
    if args.out:
        write_atomic(args.out, engine.read_bytes())
        ModelSpec.read_sidecar(engine).write_sidecar(args.out)
        print(f"copied to {args.out} (+ {args.out}.json)")
    return 0
