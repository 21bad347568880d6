"""End to end with real rclpy: a publisher sends the synthetic video's frames as
CompressedImage and as Image, the bridge (`python -m runtime.ros`, in the ROS side env)
streams them to a real `understudy serve`, and a subscriber checks the Detection2DArray
answers: header copied, boxes equal to what `understudy detect` finds on the same frames.

The ROS side env is built by scripts/side_env/ros.sh (here, if missing); where it cannot
be built, these tests are skipped with the script's reason (and .ci/run prints it).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from runtime.cli import main as cli_main
from runtime.video import open_source
from tests.runtime.test_serve_cli import ServeProcess
from tests.runtime.tiny_models import build_conv_model, make_spec

pytestmark = pytest.mark.timeout(1200)  # a first run builds the ROS side env (minutes)
ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "side_env" / "ros.sh"
DRIVER = Path(__file__).with_name("ros_driver.py")
SCORE = "0.05"  # the tiny random model's scores are low: a low threshold gives boxes


@pytest.fixture(scope="module")
def frames_and_model(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory):
    """(folder of the video's frames as PNG, model, `understudy detect`'s records)."""
    tmp = tmp_path_factory.mktemp("ros-e2e")
    frames = tmp / "frames"
    frames.mkdir()
    for i, (_, image) in enumerate(open_source(str(tiny_synth / "video.mp4")).frames()):
        assert cv2.imwrite(str(frames / f"{i:03d}.png"), image)
    model = build_conv_model(tmp / "model.onnx", make_spec())
    out = tmp / "detect"
    argv = ["detect", str(frames), "--model", str(model), "--out", str(out)]
    assert cli_main([*argv, "--score-threshold", SCORE]) == 0
    records = json.loads((out / "detections.json").read_text())
    records = records["frames"] if isinstance(records, dict) else records
    assert sum(len(r["boxes"]) for r in records) > 0, "the model finds nothing to compare"
    return frames, model, records


def ros_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(random.randint(1, 100)),  # apart from other runs on this machine
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOCALHOST_ONLY="1",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.mark.parametrize(
    ("mode", "encode", "executor"),
    [
        ("compressed", "jpeg", "events"),
        ("compressed", "jpeg", "single"),
        ("image", "raw", "events"),
        ("image-rgb8", "png", "events"),
    ],
)
def test_bridge_publishes_what_detect_finds(
    ros_python: Path, frames_and_model, tmp_path: Path, mode: str, encode: str, executor: str
) -> None:
    frames, model, records = frames_and_model
    serve = ["serve", "--model", str(model), "--port", "0", "--budget-ms", "10000"]
    server = ServeProcess([sys.executable, "-m", "runtime.cli", *serve, "--score-threshold", SCORE])
    bridge = None
    try:
        target = server.target()
        env = ros_env()
        in_topic, out_topic = "/cam_test/image", "/cam_test/detections"
        if mode == "compressed":
            in_topic += "/compressed"  # the name tells the type (no --input-type)
        topics = ["--input", in_topic, "--output", out_topic]
        flags = ["--server", target, "--encode", encode, "--stats-period", "0"]
        flags += ["--executor", executor]
        bridge = subprocess.Popen(
            [str(ros_python), "-m", "runtime.ros", *topics, *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        result = tmp_path / "answers.json"
        args = [str(frames), mode, in_topic, out_topic, str(result)]
        driver = subprocess.run(
            [str(ros_python), str(DRIVER), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert driver.returncode == 0, driver.stderr[-2000:]
    finally:
        log = ""
        if bridge is not None:
            bridge.terminate()
            log = bridge.communicate(timeout=30)[0]
        server.kill()
    answers = json.loads(result.read_text())
    assert len(answers) == len(records) == len(list(frames.glob("*.png")))
    for answer, expected in zip(answers, records):
        i = answer["index"]
        stamp = [1000 + i, i * 1000]
        assert answer["stamp"] == stamp and answer["frame_id"] == "cam_test"
        assert all(h == [*stamp, "cam_test"] for h in answer["det_headers"])
        got = sorted(answer["boxes"], key=lambda b: (-b[5], b[0]))
        want = sorted(
            (
                [*box, name, score]
                for box, name, score in zip(
                    expected["boxes"], expected["class_names"], expected["scores"]
                )
            ),
            key=lambda b: (-b[5], b[0]),
        )
        assert len(got) == len(want), (i, got, want)
        for g, w in zip(got, want):
            assert g[4] == w[4]
            assert g[0:4] == pytest.approx(w[0:4], abs=0.02)  # detect rounds to 0.01 px
            assert g[5] == pytest.approx(w[5], abs=1e-4)
    name = {"events": "EventsExecutor", "single": "SingleThreadedExecutor"}[executor]
    assert f"executor: {name}" in log, log[-2000:]
    counts = re.search(r"(\d+) received, (\d+) published, .* (\d+) errors", log)
    assert counts is not None, log[-2000:]
    assert int(counts[2]) >= len(answers) and counts[3] == "0", counts[0]


def test_side_env_failure_names_the_script_and_step(tmp_path: Path) -> None:
    env = dict(os.environ, ROS_SIDE_ENV=str(tmp_path / "env"), ROS_PYTHON="no-such-python3.11")
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    line = (tmp_path / "env" / "FAILED").read_text().strip()
    assert "scripts/side_env/ros.sh" in line and "no-such-python3.11" in line
    assert line in r.stderr
