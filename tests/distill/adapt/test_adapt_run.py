"""End to end on tiny synth data: a served student with a shadow teacher saves the site
frames where they disagree, and ``understudy adapt`` turns that folder into a site
student, a report (JSON, Markdown, PNG) and the gate's verdict."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import pytest

from distill.data.synth import generate
from distill.data.synth_config import SynthConfig
from distill.data.synth_shift import SiteShift
from runtime.cli import main
from runtime.client import DetectorClient
from runtime.pipeline import Detector
from runtime.server import build_server
from runtime.server_config import ServerConfig, ShadowConfig

pytestmark = pytest.mark.timeout(300)
SITE = SynthConfig(train=14, val=4, unlabelled=1, video_frames=2, video_width=160, video_height=120)
T0 = 1_764_000_000_000_000_000


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A second tiny checkpoint (more steps than the deployed ``tiny_checkpoint``)."""
    from distill.config import load
    from distill.train import train
    from distill.train_config import TrainConfig

    cfg = load(
        TrainConfig,
        None,
        ["model=nano", "img_size=64", "epochs=1", "batch_size=4", "max_steps=4", "bf16=off"],
    )
    return train(cfg, tiny_data, tmp_path_factory.mktemp("teacher"), progress=False)


def _serve_site(student: Path, teacher: Path, images: list[Path], save: Path) -> int:
    """Stream ``images`` as camera "dock" through ``serve`` with a shadow teacher saving
    every disagreeing frame; returns how many were saved."""
    shadow = ShadowConfig(every=1, teacher=teacher.name, save_dir=str(save), save_below_f1=1.0)
    # the student at serve's operating point; the teacher keeps its weak boxes (tiny
    # untrained models score below 0.25), so every frame disagrees
    srv = build_server(
        Detector(student),
        ServerConfig(port=0, shadow=shadow),
        Detector(teacher, score_threshold=0.01),
    )
    try:
        assert srv.wait_ready(60)
        with DetectorClient(f"127.0.0.1:{srv.port}", timeout=30) as client:
            for i, path in enumerate(images):  # one at a time, so the teacher sees each
                call = client.open_stream(budget_ms=60_000, camera_id="dock")
                responses = iter(call)
                call.send(cv2.imread(str(path)), frame_id=i, capture_time_ns=T0 + i * 10**8)
                assert next(responses).HasField("result")
                call.close()
                list(responses)
                deadline = time.monotonic() + 30
                while srv.shadow.compared < i + 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
    finally:
        srv.stop(1.0)
    return len(list(save.glob("shadow_*.json")))


def test_adapt_from_a_served_shadow_folder(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path, teacher: Path, capsys
) -> None:
    site = generate(tmp_path / "site", 4, SITE, SiteShift("tiles", (1.25, 0.95, 0.6)))
    frames = sorted((site / "images" / "train").glob("*.jpg"))
    save = tmp_path / "shadow"
    saved = _serve_site(tiny_checkpoint, teacher, frames, save)
    assert saved >= 8, f"only {saved} of {len(frames)} frames disagreed"
    records = [json.loads(p.read_text()) for p in sorted(save.glob("*.json"))]
    assert {r["camera_id"] for r in records} == {"dock"}
    out = tmp_path / "out"
    code = main(
        [
            "adapt",
            "--student", str(tiny_checkpoint),
            "--teacher", str(teacher),
            "--data", str(tiny_data / "data.yaml"),
            "--site", str(save),
            "--site-labels", str(site / "data.yaml"),
            "--out", str(out),
            "--no-progress",
            "--set", "epochs=2", "--set", "batch_size=4", "--set", "bf16=off",
            "--set", "test_share=0.25", "--set", "stop_share=0.25", "--set", "min_gain=0.5",
            "--set", "replay_fraction=0.5", "--minutes", "30", "--force",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    # the teacher check ran first: teacher vs the deployed student on the original val split
    check = report["teacher_check"]
    assert check["reference"]["path"] == str(tiny_checkpoint)
    assert check["teacher"]["path"] == str(teacher) and check["margin"] == 2.0
    assert check["forced"] == (not check["passed"]) and check["message"] in printed
    assert ("REPLACE" in printed) == report["gate"]["replace"]
    assert (out / "report.md").read_text().startswith("# Site adaptation")
    # --minutes: the training was sized from timed steps; 30 minutes hold all of it
    b = report["budget"]
    assert b["minutes"] == 30 and b["fits"] and b["costs"]["seconds_per_step"] > 0
    assert 0 < b["planned_seconds"] <= b["costs"]["left"] < 30 * 60
    assert (b["epochs"], b["replay_fraction"]) == (2, 0.5)
    sized = report["distill_config"]
    assert (sized["epochs"], sized["labelled_fraction"]) == (b["epochs"], b["replay_fraction"])
    assert report["stopped_early"] == (len(report["history"]) < b["epochs"])
    # half the original data replayed: each epoch draws its own half (the seed moves on)
    from distill.checkpoint import read_checkpoint

    last = read_checkpoint(out / "train" / "last.pt")["config"]
    assert last["seed"] == len(report["history"]) - 1 and last["labelled_fraction"] == 0.5
    assert f"adapt budget 30 min: 2 epochs x {b['steps_per_epoch']} steps" in printed
    assert "Time budget 30 min" in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # the held-out frames are the latest ones the camera saw
    counts = report["site_frames"]
    assert counts["train"] + counts["stop"] + counts["test"] == saved and counts["streams"] == 1
    index = {
        part: [r["time_ns"] for r in json.loads((out / "site" / part / "frames.json").read_text())]
        for part in ("train", "stop", "test")
    }
    assert max(index["train"]) < min(index["stop"]) <= max(index["stop"]) < min(index["test"])
    # scores of both students, the epochs and the gate's numbers agree
    for who in ("deployed", "adapted"):
        s = report["scores"][who]
        assert set(s) == {"site", "original", "site_labelled"}
        assert 0 <= s["site"]["f1"] <= 100 and s["site"]["frames"] == counts["test"]
    assert [h["epoch"] for h in report["history"]] == [1, 2][: len(report["history"])]
    gate = report["gate"]
    assert gate["site_metric"] == "labelled site mAP50-95"
    assert gate["site_adapted"] == report["scores"]["adapted"]["site_labelled"]["map50_95"]
    assert gate["original_deployed"] == report["scores"]["deployed"]["original"]["map50_95"]
    # the student to deploy is the gate's choice, and loads
    from distill.checkpoint import load_detector

    _, adapted = load_detector(out / "adapted.pt")
    assert adapted["config"]["init"] == str(tiny_checkpoint) and adapted["config"]["freeze"] == 2
    chosen = out / "adapted.pt" if gate["replace"] else tiny_checkpoint
    assert (out / "student.pt").read_bytes() == chosen.read_bytes()
    assert report["student"]["is"] == ("adapted" if gate["replace"] else "deployed")


def test_bad_inputs_end_in_one_line(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path, capsys
) -> None:
    base = ["adapt", "--student", str(tiny_checkpoint), "--data", str(tiny_data / "data.yaml")]
    base += ["--out", str(tmp_path / "out")]
    assert main([*base, "--teacher", str(tmp_path / "none.pt"), "--site", str(tmp_path)]) == 2
    assert "none.pt: teacher not found" in capsys.readouterr().err
    assert main([*base, "--teacher", str(tiny_checkpoint), "--site", str(tmp_path / "gone")]) == 2
    assert "gone: site source not found" in capsys.readouterr().err
    assert main([*base, "--teacher", str(tiny_checkpoint), "--site", "x", "--set", "epoch=1"]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err


def test_a_teacher_not_ahead_of_the_deployed_student_stops_adapt(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path, capsys
) -> None:
    """The deployed student as its own teacher leads by 0 points: adapt stops before any
    site frame is written, with the numbers in one line (exit 1)."""
    images = tmp_path / "frames"
    images.mkdir()
    for path in sorted((tiny_data / "images" / "val").glob("*.jpg"))[:4]:
        (images / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    args = ["adapt", "--student", str(tiny_checkpoint), "--teacher", str(tiny_checkpoint)]
    args += ["--data", str(tiny_data / "data.yaml"), "--site", str(images), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("understudy adapt: teacher check") and "+0.00 points" in err
    assert "not ahead" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert not (out / "site").exists() and not (out / "report.json").exists()
