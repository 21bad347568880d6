"""The gRPC floor benchmark: an echo server in another process, both clients, its files."""

import json

import pytest

from benchmarks import grpc_floor


def test_rows_for_each_client_size_and_pace(tmp_path):
    out = tmp_path / "res"
    args = ["--frames", "3", "--sizes", "1000", "5000", "--fps", "60", "--out", str(out)]
    assert grpc_floor.main(args) == 0
    doc = json.loads((out / "grpc_floor.json").read_text())
    assert {"command", "machine", "date", "grpcio"} <= doc.keys()
    assert "--frames 3" in doc["command"]
    got = {(r["client"], r["fps"], r["request_bytes"]) for r in doc["rows"]}
    want = {(c, f, s) for c in ("sync", "aio") for f in (60.0, 0.0) for s in (1000, 5000)}
    assert got == want
    for r in doc["rows"]:
        assert r["round_trips"] == 3  # the warm-up round trips are left out
        assert 0 < r["rtt_p50_ms"] <= r["rtt_p90_ms"] <= r["rtt_p99_ms"]
        assert r["reply_bytes"] == 200
    md = (out / "grpc_floor.md").read_text()
    assert md.count("\n| sync |") == 4 and md.count("\n| aio |") == 4


def test_frame_size_needs_the_video(tmp_path):
    with pytest.raises(SystemExit) as e:
        grpc_floor.main(["--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path)])
    assert e.value.code == 2


def test_frame_size_is_the_median_jpeg(tmp_path):
    import cv2
    import numpy as np

    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 48))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(5)]
    for f in frames:
        writer.write(f)
    writer.release()
    from benchmarks.common import video_frames
    from runtime.frames import encode_image

    sizes = sorted(len(encode_image(f, "jpeg", 90)) for f in video_frames(video, 300))
    assert len(sizes) == 5
    assert grpc_floor.frame_bytes(video) == sizes[2]
