"""Full vs reduced JPEG decoding on the serving path: time, and what it does to detections.

    python -m benchmarks.decode --model student.onnx [--data data/synth]
        [--video data/synth/video.mp4] [--frames 300]

The server decodes each JPEG frame and letterboxes it to the network input. With
``--reduced-decode`` a JPEG at least twice the input is decoded at 1/2, 1/4 or 1/8 scale
by libjpeg's DCT scaling, which skips most of the decode and of the resize. This measures,
on 640x480 JPEG frames (quality 90) and the same model:

- per frame: decode time and letterbox (pre-process) time, full vs reduced (medians over
  ``--repeats`` passes of the frames, the two paths interleaved frame by frame, with no
  model running: the cost each path adds to a frame on a server's gRPC thread);
- agreement on the synth video: the full-decode detections (score >= 0.25) taken as
  reference, the share found again with reduced decoding and the share of reduced-decode
  detections that match one (same class, IoU >= 0.5; ``runtime.shadow.match_detections``,
  the shadow teacher's agreement measure);
- accuracy: mAP50-95 of both paths on the val split upscaled 2x to 640x480 (bicubic,
  JPEG quality 90, boxes scaled with it), scored by pycocotools.

Writes ``benchmarks/results/decode.json`` and ``decode.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import command_line, video_frames
from runtime.files import write_atomic, write_json_atomic
from runtime.frames import decode_encoded_scaled, encode_image
from runtime.measure import machine, markdown_table, percentile, today
from runtime.pipeline import Detector
from runtime.shadow import Agreement, match_detections
from runtime.types import Detections

PATHS = ("full", "reduced")
FRAME = (640, 480)  # (width, height) of the JPEG frames
COLUMNS = [
    ("decode", "decode"),
    ("decode_p50_ms", "decode p50 ms"),
    ("preprocess_p50_ms", "letterbox p50 ms"),
    ("decode_plus_pre_p50_ms", "decode + letterbox p50 ms"),
    ("val2x_map50_95", "mAP50-95 (val 2x)"),
    ("val2x_map50", "mAP50 (val 2x)"),
]


def time_paths(det: Detector, frames: list[bytes], repeats: int) -> dict[str, tuple[list, list]]:
    """{path: (decode ms, letterbox ms)} per frame and pass, the paths interleaved."""
    from runtime.preprocess import Preprocessor

    h, w = det.spec.input_size
    pre = Preprocessor(det.spec)
    times: dict[str, tuple[list, list]] = {"full": ([], []), "reduced": ([], [])}
    for _ in range(repeats):
        for data in frames:
            for path in PATHS:
                t0 = time.perf_counter()
                image, _, _ = decode_encoded_scaled(
                    data, fit_size=(h, w) if path == "reduced" else None
                )
                t1 = time.perf_counter()
                pre(image)
                t2 = time.perf_counter()
                times[path][0].append((t1 - t0) * 1000.0)
                times[path][1].append((t2 - t1) * 1000.0)
    return times


def run_path(det: Detector, data: bytes, reduced: bool) -> Detections:
    """Decode + detect one JPEG like the server does: detections in the sent pixels."""
    h, w = det.spec.input_size
    image, header, r = decode_encoded_scaled(data, fit_size=(h, w) if reduced else None)
    dets, _ = det.detect(image)
    if r != 1:  # as runtime.service does: back to the pixels of the image as sent
        boxes = np.minimum(dets.boxes * r, [header.width, header.height] * 2).astype(np.float32)
        dets = replace(dets, boxes=boxes)
    return dets


def jpeg_frames(video: Path, n: int) -> list[bytes]:
    """The first ``n`` frames of ``video`` at 640x480 (INTER_AREA), JPEG quality 90."""
    return [
        encode_image(
            f if f.shape[1::-1] == FRAME else cv2.resize(f, FRAME, interpolation=cv2.INTER_AREA),
            "jpeg",
            90,
        )
        for f in video_frames(video, n)
    ]


def video_agreement(det: Detector, frames: list[bytes]) -> dict:
    """Reduced vs full decoding on ``frames``, the full-decode detections as reference:
    counts and the shares found again (recall) and matching one (precision)."""
    classes = len(det.spec.class_names)
    agree = Agreement.zeros(classes)
    for data in frames:
        out = {path: run_path(det, data, path == "reduced") for path in PATHS}
        agree = agree + match_detections(out["reduced"], out["full"], classes)
    matched = int(agree.tp.sum())
    red_n, ref_n = matched + int(agree.fp.sum()), matched + int(agree.fn.sum())
    return {
        "frames": len(frames),
        "full_detections": ref_n,
        "reduced_detections": red_n,
        "recall_vs_full": round(matched / max(ref_n, 1), 4),
        "precision_vs_full": round(matched / max(red_n, 1), 4),
    }


def path_rows(det: Detector, data: str, times: dict[str, tuple[list, list]]) -> list[dict]:
    """One row per decode path: median timings and mAP on the val split upscaled 2x."""
    from runtime.evaluate import coco_evaluate

    split, encoded = upscaled_val(data, 2)
    rows = []
    for path in PATHS:
        preds = {i: run_path(det, jpeg, path == "reduced") for i, jpeg in encoded.items()}
        map50_95, map50, _ = coco_evaluate(split, preds)
        dec, pre = times[path]
        rows.append(
            {
                "decode": path,
                "decode_p50_ms": round(percentile(dec, 50), 3),
                "preprocess_p50_ms": round(percentile(pre, 50), 3),
                "decode_plus_pre_p50_ms": round(
                    percentile([a + b for a, b in zip(dec, pre)], 50), 3
                ),
                "val2x_map50_95": round(map50_95, 2),
                "val2x_map50": round(map50, 2),
            }
        )
    return rows


def upscaled_val(data: str, factor: int):
    """The val split upscaled ``factor``x: (split with scaled boxes/sizes, JPEG bytes)."""
    from runtime.data.dataset import load_split

    split = load_split(data, "val")
    records, encoded = [], {}
    for rec in split.records:
        img = cv2.imread(str(rec.path), cv2.IMREAD_COLOR)
        big = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        encoded[rec.image_id] = encode_image(big, "jpeg", 90)
        records.append(
            replace(
                rec,
                boxes=(rec.boxes * factor).astype(np.float32),
                width=rec.width * factor,
                height=rec.height * factor,
            )
        )
    return replace(split, records=records), encoded


def write_results(out: Path, doc: dict) -> list[str]:
    """``out`` (JSON) and the Markdown beside it; returns the Markdown lines."""
    write_json_atomic(out, doc)
    agreement = doc["video_agreement"]
    md = [
        f"# Full vs reduced JPEG decode ({doc['date']})",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {doc['machine']}. Model: {doc['model']}; frames 640x480 JPEG q90.",
        "",
        *markdown_table(doc["rows"], COLUMNS),
        "",
        f"Agreement on {agreement['frames']} synth video frames (reference: full decode): "
        f"reduced decoding finds {agreement['recall_vs_full']:.1%} of the full-decode "
        "detections (same class, IoU >= 0.5), "
        f"{agreement['precision_vs_full']:.1%} of its own detections match one "
        f"({agreement['full_detections']} vs {agreement['reduced_detections']} detections).",
    ]
    write_atomic(out.with_suffix(".md"), "\n".join(md) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.decode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", type=Path, required=True, help="an exported .onnx student")
    ap.add_argument("--data", default="data/synth", help="dataset with a val split")
    ap.add_argument("--video", type=Path, default=Path("data/synth/video.mp4"))
    ap.add_argument("--frames", type=int, default=300, help="video frames to compare")
    ap.add_argument("--repeats", type=int, default=3, help="timing passes over the frames")
    ap.add_argument("--threads", type=int, default=None, help="model intra-op threads")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "decode.json"
    )
    args = ap.parse_args(argv)
    det = Detector(args.model, threads=args.threads)
    det.warmup()
    frames = jpeg_frames(args.video, args.frames)
    times = time_paths(det, frames, args.repeats)
    doc = {
        "command": command_line("decode", argv),
        "machine": machine(),
        "date": today(),
        "model": args.model.name,
        "frame": "640x480 jpeg q90",
        "rows": path_rows(det, args.data, times),
        "video_agreement": video_agreement(det, frames),
    }
    print("\n".join(write_results(args.out, doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
