"""``understudy detect SOURCE --model M``: detections on an image, a folder, a video or a camera.

Writes annotated images (or an annotated video) and ``detections.json`` into ``--out``
and prints per-stage timing medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.files import write_json_atomic

DETECTIONS_FILE = "detections.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="run a model on an image, a folder, a video or a camera",
        description="Run a detector on SOURCE (an image, a folder of images, a video file, or "
        "a camera index such as 0). Writes annotated images or video and detections.json "
        "(boxes xyxy in original pixels, scores, class ids and names) into --out.",
    )
    p.add_argument("source", metavar="SOURCE", help="image, folder, video file or camera index")
    p.add_argument("--model", required=True, help="model file (.onnx, .engine/.plan, .pt)")
    p.add_argument("--out", default="runs/detect", help="output folder (default: runs/detect)")
    p.add_argument("--score-threshold", type=float, default=0.25)
    p.add_argument("--iou-threshold", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=100, help="most detections per frame")
    p.add_argument("--threads", type=int, default=None, help="backend intra-op threads")
    p.add_argument(
        "--backend",
        default=None,
        choices=("onnxruntime", "tensorrt", "torch"),
        help="force a backend (default: by model file type)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument(
        "--no-pipeline",
        action="store_true",
        help="do not overlap decoding/pre-processing with inference",
    )
    p.set_defaults(func=run)


def _frame_record(
    index: int, name: str, frame: Any, dets: Any, timing: Any, names: tuple[str, ...]
) -> dict:
    ids = [int(c) for c in dets.class_ids]
    return {
        "index": index,
        "name": name,
        "width": int(frame.shape[1]),
        "height": int(frame.shape[0]),
        "boxes": [[round(float(v), 2) for v in box] for box in dets.boxes],
        "scores": [round(float(s), 4) for s in dets.scores],
        "class_ids": ids,
        "class_names": [names[c] if 0 <= c < len(names) else str(c) for c in ids],
        "timings_ms": {
            "decode": round(timing.decode_ms, 3),
            "preprocess": round(timing.preprocess_ms, 3),
            "infer": round(timing.infer_ms, 3),
            "postprocess": round(timing.postprocess_ms, 3),
            "total": round(timing.total_ms, 3),
        },
    }


def _write_image(path: Path, image: Any) -> None:
    import cv2

    from runtime.errors import InputError
    from runtime.files import atomic_path

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise InputError(f"{path}: cannot write the annotated image")


def summarize(timings: list[Any], wall_s: float) -> str:
    """One line: frame count, median ms per stage, frames per second."""
    if not timings:
        return "0 frames"
    med = {
        k: statistics.median(getattr(t, f"{k}_ms") for t in timings)
        for k in ("decode", "preprocess", "infer", "postprocess", "total")
    }
    stages = ", ".join(f"{k} {v:.2f}" for k, v in med.items())
    fps = len(timings) / wall_s if wall_s > 0 else 0.0
    return f"{len(timings)} frames; median ms: {stages}; {fps:.1f} frames/s"


def run(args: argparse.Namespace) -> int:
    from runtime.errors import InputError
    from runtime.pipeline import Detector
    from runtime.video import VideoSink, draw_detections, open_source

    source = open_source(args.source, max_frames=args.max_frames)
    out = Path(args.out)
    if source.kind in ("image", "folder"):
        folder = Path(source.description)
        folder = folder if source.kind == "folder" else folder.parent
        if out.resolve() == folder.resolve():
            raise InputError(
                f"--out {out} is the source folder: annotated images would overwrite the originals"
            )
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    timings: list[Any] = []
    pending: deque[tuple[str, Any]] = deque()  # (name, frame) in the order handed to stream

    def frames() -> Iterator[Any]:
        for name, frame in source.frames():
            pending.append((name, frame))
            yield frame

    sink = None
    if source.kind in ("video", "camera"):
        stem = (
            Path(source.description).stem
            if source.kind == "video"
            else source.description.replace(" ", "")
        )
        sink = VideoSink(out / f"{stem}_detections.mp4", source.fps)
    with Detector(
        args.model,
        backend=args.backend,
        threads=args.threads,
        device=args.device,
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        max_detections=args.max_det,
    ) as det:
        names = det.spec.class_names
        det.warmup(1)
        start = time.perf_counter()
        results = det.stream(frames(), pipelined=not args.no_pipeline)
        try:
            for index, (dets, timing) in enumerate(results):
                name, frame = pending.popleft()
                records.append(_frame_record(index, name, frame, dets, timing, names))
                timings.append(timing)
                annotated = draw_detections(frame, dets, names)
                if sink is not None:
                    sink.write(annotated)
                else:
                    _write_image(out / name, annotated)
        except KeyboardInterrupt:
            print("interrupted: writing what was detected so far")
        finally:
            wall = time.perf_counter() - start
            results.close()  # stops the pre-processing worker before the source is released
            source.close()
            if sink is not None:
                sink.close()
        write_json_atomic(
            out / DETECTIONS_FILE,
            {
                "model": str(args.model),
                "backend": det.backend_name,
                "precision": det.precision,
                "source": source.description,
                "source_kind": source.kind,
                "class_names": list(names),
                "frames": records,
            },
        )
    print(summarize(timings, wall))
    written = f"{len(records)} annotated images" if sink is None or not records else sink.path
    print(f"wrote {out / DETECTIONS_FILE} and {written}")
    return 0
