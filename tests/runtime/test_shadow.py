"""Shadow teacher: agreement math on a constructed case, the save folder's cap, and the
service with a slow teacher (answers never wait for it; its queue drops, never grows)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.cli import main
from runtime.client import DetectorClient
from runtime.errors import ConfigError, DataError
from runtime.model_spec import ModelSpec
from runtime.server import build_server
from runtime.server_config import ServerConfig, ShadowConfig
from runtime.shadow import match_detections
from runtime.shadow_saver import DisagreementSaver, FrameTag, read_record
from runtime.types import Detections, StageTimings
from tests.runtime.serving_fakes import (
    CLASS_NAMES,
    FakeDetector,
    build_constant_onnx,
    metric,
    running,
    solid,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def dets(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    """[(x1, y1, x2, y2, score, class_id), ...] -> Detections."""
    if not rows:
        return Detections.empty()
    a = np.array(rows, np.float64)
    return Detections(
        a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int32)
    )


class FakeTeacher:
    """For an image with top-left value v: the student's box (top-left quarter, class
    v % 3) plus a second box of the same class in the bottom-right quarter, so the
    FakeDetector student has precision 1 and recall 1/2 against it."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        gate: threading.Event | None = None,
        class_names: tuple[str, ...] = CLASS_NAMES,
    ) -> None:
        self.spec = ModelSpec(class_names=class_names, input_size=(32, 32), model_hash="t")
        self.backend_name, self.precision, self.max_batch = "fake", "fp32", 1
        self.delay_s, self.gate = delay_s, gate
        self.calls = 0
        self.entered = threading.Event()  # set when a detect call begins
        self.niceness: list[int] = []
        self.closed = False

    def warmup(self, n: int = 3) -> None:
        pass

    def detect(self, image: np.ndarray) -> tuple[Detections, StageTimings]:
        if hasattr(os, "getpriority"):
            self.niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay_s)
        self.calls += 1
        h, w = image.shape[:2]
        c = int(image.reshape(-1)[0]) % 3
        return dets([(0, 0, w / 2, h / 2, 0.9, c), (w / 2, h / 2, w, h, 0.8, c)]), StageTimings()

    def close(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------- agreement math
def test_agreement_on_a_constructed_case() -> None:
    """Hand-counted, classes 0 person, 1 car, 2 dog; the teacher is the reference."""
    teacher = dets(
        [
            (0, 0, 10, 10, 0.9, 0),  # T1 person
            (20, 20, 30, 30, 0.8, 0),  # T2 person
            (40, 40, 60, 60, 0.7, 1),  # T3 car
            (70, 70, 80, 80, 0.6, 2),  # T4 dog
            (0, 50, 10, 60, 0.1, 1),  # T5 car, below the reference score 0.25
        ]
    )
    student = dets(
        [
            (0, 0, 10, 10, 0.95, 0),  # S1 -> T1 (IoU 1): TP person
            (1, 1, 11, 11, 0.5, 0),  # S2 duplicate of T1 (IoU 0.68, T1 taken): FP person
            (40, 40, 60, 60, 0.8, 2),  # S3 on T3 but says dog: FP dog, T3 missed: FN car
            (20, 20, 30, 35, 0.7, 0),  # S4 -> T2 (IoU 100/150): TP person
            (70, 70, 75, 80, 0.6, 2),  # S5 -> T4 (IoU exactly 0.5): TP dog
            (0, 50, 10, 60, 0.4, 1),  # S6 on T5, which is not a reference box: FP car
        ]
    )
    a = match_detections(student, teacher, 3, iou_threshold=0.5, teacher_min_score=0.25)
    assert a.tp.tolist() == [2, 0, 1]
    assert a.fp.tolist() == [1, 1, 1]
    assert a.fn.tolist() == [0, 1, 0]
    np.testing.assert_allclose(a.precision(), [2 / 3, 0.0, 1 / 2])
    np.testing.assert_allclose(a.recall(), [1.0, 0.0, 1.0])
    assert a.overall() == pytest.approx((3 / 6, 3 / 4))
    assert a.f1() == pytest.approx(2 * 3 / (2 * 3 + 3 + 1))
    # with T5 in the reference, S6 matches it
    b = match_detections(student, teacher, 3, teacher_min_score=0.0)
    assert (b.tp.tolist(), b.fp.tolist(), b.fn.tolist()) == ([2, 1, 1], [1, 0, 1], [0, 1, 0])
    total = a + b
    assert total.tp.tolist() == [4, 1, 2] and total.fn.tolist() == [0, 2, 0]


def test_matching_is_greedy_by_score_to_the_best_free_box() -> None:
    teacher = dets([(0, 0, 10, 10, 0.9, 0), (4, 0, 14, 10, 0.9, 0)])
    # the top-scoring box overlaps the first teacher box most (IoU 0.82 vs 0.54) and takes it;
    # the second only overlaps the second teacher box enough (IoU 0.67)
    student = dets([(1, 0, 11, 10, 0.9, 0), (6, 0, 16, 10, 0.3, 0)])
    a = match_detections(student, teacher, 1)
    assert (a.tp.tolist(), a.fp.tolist(), a.fn.tolist()) == ([2], [0], [0])
    # a lower score for the first box: the second (now first in score order) takes the
    # second teacher box and the first still finds the first teacher box
    swapped = dets([(1, 0, 11, 10, 0.2, 0), (6, 0, 16, 10, 0.3, 0)])
    assert match_detections(swapped, teacher, 1).tp.tolist() == [2]


def test_agreement_edge_cases() -> None:
    empty = Detections.empty()
    a = match_detections(empty, empty, 2)
    assert a.f1() == 1.0 and np.isnan(a.precision()).all() and np.isnan(a.overall()[0])
    only_student = match_detections(dets([(0, 0, 5, 5, 0.9, 1)]), empty, 2)
    assert only_student.fp.tolist() == [0, 1] and only_student.f1() == 0.0
    assert np.isnan(only_student.recall()[1]) and only_student.precision()[1] == 0.0
    with pytest.raises(ValueError, match="class ids"):
        match_detections(dets([(0, 0, 5, 5, 0.9, 3)]), empty, 2)


# ---------------------------------------------------------------------- save folder
def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_saver_keeps_the_folder_under_its_cap(tmp_path: Path) -> None:
    folder = tmp_path / "disagree"
    one = DisagreementSaver(tmp_path / "probe", 10.0, CLASS_NAMES)
    first = one.save(_noise(0), dets([(0, 0, 5, 5, 0.9, 1)]), Detections.empty(), {"f1": 0.0})
    pair = sum(p.stat().st_size for p in first.parent.iterdir())
    cap_mb = 3.5 * pair / (1024 * 1024)  # room for three pairs
    saver = DisagreementSaver(folder, cap_mb, CLASS_NAMES)
    stems = []
    for i in range(8):
        path = saver.save(_noise(i), dets([(0, 0, 5, 5, 0.9, 1)]), Detections.empty(), {"f1": 0.0})
        stems.append(path.stem)
        size = sum(p.stat().st_size for p in folder.iterdir())
        assert size <= saver.max_bytes and size == saver.total_bytes
    left = sorted(p.stem for p in folder.glob("*.json"))
    assert left == stems[-len(left) :] and 2 <= len(left) <= 3  # the oldest went first
    assert sorted(p.stem for p in folder.glob("*.jpg")) == left
    assert not list(folder.glob("*.tmp"))
    record = json.loads((folder / f"{left[-1]}.json").read_text())
    assert record["student"] == [
        {"box": [0.0, 0.0, 5.0, 5.0], "score": 0.9, "class_id": 1, "label": "car"}
    ]
    assert record["teacher"] == [] and record["image"] == f"{left[-1]}.jpg"
    assert cv2.imread(str(folder / record["image"])).shape == (48, 64, 3)
    # a restart with a smaller cap counts the pairs already there and trims them
    again = DisagreementSaver(folder, 1.2 * pair / (1024 * 1024), CLASS_NAMES)
    assert sorted(p.stem for p in folder.glob("*.json")) == left[-1:]
    assert again.total_bytes == sum(p.stat().st_size for p in folder.iterdir())
    # layout version 2 without a tag: no camera, no capture time; time from the saver
    assert record["version"] == 2 and record["camera_id"] == "" and record["frame_id"] == 0
    assert record["capture_time_ns"] is None and record["saved_time_ns"] > 0
    # a pair larger than the whole cap is not written at all
    tiny = DisagreementSaver(tmp_path / "tiny", 0.001, CLASS_NAMES)
    assert tiny.save(_noise(9), Detections.empty(), Detections.empty(), {}) is None
    assert list((tmp_path / "tiny").iterdir()) == []


def test_records_of_both_layout_versions_read_back(tmp_path: Path) -> None:
    saver = DisagreementSaver(tmp_path, 10.0, CLASS_NAMES)
    tag = FrameTag("cam-a", 7, 1_000_000_000_123, 1_000_000_000_999)
    student = dets([(1, 2, 11, 12, 0.9, 1)])
    teacher = dets([(1, 2, 11, 12, 0.8, 1), (20, 20, 30, 30, 0.7, 2)])
    new = read_record(saver.save(_noise(1), student, teacher, {"f1": 0.5}, tag))
    assert (new.version, new.camera_id, new.frame_id) == (2, "cam-a", 7)
    assert new.time_ns == new.capture_time_ns == 1_000_000_000_123
    np.testing.assert_array_equal(new.teacher.class_ids, [1, 2])
    np.testing.assert_allclose(new.student.boxes, [[1, 2, 11, 12]])
    assert new.image.is_file()
    # a version 1 record (before capture time and camera id were kept)
    old = tmp_path / "shadow_00000000000000000042_000003.json"
    old.write_text(
        json.dumps(
            {
                "image": "x.jpg",
                "width": 4,
                "height": 4,
                "f1": 0.1,
                "student": [],
                "teacher": [{"box": [0, 0, 2, 2], "score": 0.5, "class_id": 0, "label": "person"}],
            }
        )
    )
    back = read_record(old)
    assert (back.version, back.camera_id, back.time_ns, back.capture_time_ns) == (1, "", 42, None)
    assert len(back.student) == 0 and len(back.teacher) == 1
    # no capture time: the arrival time orders it
    arrived = read_record(saver.save(_noise(2), student, teacher, {}, FrameTag("b", 1, None, 55)))
    assert arrived.time_ns == 55 and arrived.capture_time_ns is None
    (tmp_path / "shadow_bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"shadow_bad\.json"):
        read_record(tmp_path / "shadow_bad.json")


# ---------------------------------------------------------------------- in the service
CAPTURE_T0 = 1_764_480_000_000_000_000  # capture times sent by _closed_loop: T0 + i ms


def _closed_loop(client: DetectorClient, n: int, after=None, camera_id: str = "") -> list[float]:
    """Send ``n`` frames one at a time on one stream; the server-side total_ms of each."""
    call = client.open_stream(budget_ms=10_000, encode="raw", camera_id=camera_id)
    responses = iter(call)
    totals = []
    for i in range(n):
        call.send(solid(i % 250), frame_id=i, capture_time_ns=CAPTURE_T0 + i * 1_000_000)
        r = next(responses)
        assert r.HasField("result"), r
        totals.append(r.result.timings.total_ms)
        if after is not None:
            after(i)
    call.close()
    assert list(responses) == []
    return totals


def test_slow_teacher_never_delays_answers_and_its_queue_drops() -> None:
    frames = 30
    with running(FakeDetector(delay_s=0.02)) as (_srv, client):
        baseline = _closed_loop(client, frames)
    teacher = FakeTeacher(delay_s=0.2)  # 10x the student
    srv = build_server(
        FakeDetector(delay_s=0.02), ServerConfig(port=0, shadow=ShadowConfig(every=1)), teacher
    )
    try:
        assert srv.wait_ready(10)
        with DetectorClient(f"127.0.0.1:{srv.port}", timeout=10) as client:
            pending = []
            shadowed = _closed_loop(
                client, frames, after=lambda _: pending.append(srv.shadow.pending)
            )
        shadow = srv.shadow
        # every answered frame was offered: queued (at most 1 waiting + 1 running beyond
        # those compared) or skipped and counted, never waited for
        assert shadow.offered + shadow.skipped == frames
        assert shadow.skipped > 0 and shadow.offered <= shadow.compared + 2
        assert max(pending) <= 1
        assert (
            metric(srv, "understudy_shadow_frames_skipped_total", {"reason": "busy"})
            == shadow.skipped
        )
    finally:
        srv.stop(0.5)
    # answers as fast as without the shadow (medians; generous tolerance for a loaded CI box)
    assert statistics.median(shadowed) <= 1.5 * statistics.median(baseline) + 10.0


def test_blocked_teacher_does_not_hold_up_answers() -> None:
    gate = threading.Event()
    teacher = FakeTeacher(gate=gate)
    srv = build_server(FakeDetector(), ServerConfig(port=0, shadow=ShadowConfig(every=1)), teacher)
    try:
        assert srv.wait_ready(10)
        with DetectorClient(f"127.0.0.1:{srv.port}", timeout=10) as client:
            # frame 0 goes to the teacher, which then blocks; frame 1 waits in its queue;
            # frames 2..11 are skipped, and all twelve are answered meanwhile
            _closed_loop(client, 12, after=lambda i: i or teacher.entered.wait(10))
        assert (srv.shadow.compared, srv.shadow.offered, srv.shadow.skipped) == (0, 2, 10)
    finally:
        gate.set()
        srv.stop(0.5)


def test_agreement_reaches_metrics_model_info_and_save_folder(tmp_path: Path) -> None:
    teacher = FakeTeacher()
    save = tmp_path / "disagree"
    config = ShadowConfig(every=2, teacher="fake.onnx", save_dir=str(save), save_below_f1=0.8)
    srv = build_server(FakeDetector(), ServerConfig(port=0, shadow=config), teacher)
    try:
        assert srv.wait_ready(10)
        shadow = srv.shadow
        with DetectorClient(f"127.0.0.1:{srv.port}", timeout=10) as client:
            _closed_loop(
                client,
                6,
                after=lambda _: wait_until(lambda: shadow.compared == shadow.offered),
                camera_id="dock-3",
            )
            info = client.model_info()
    finally:
        srv.stop(0.5)
    # frames 1, 3, 5 (values 1, 3, 5 -> classes car, person, dog): one TP and one FN each
    report = info.shadow
    assert (report.teacher, report.every, report.frames_compared, report.frames_skipped) == (
        "fake.onnx",
        2,
        3,
        0,
    )
    assert report.precision == pytest.approx(1.0) and report.recall == pytest.approx(0.5)
    assert report.HasField("teacher_latency_p50_ms") and report.iou_threshold == pytest.approx(0.5)
    rows = [
        (c.label, c.true_positives, c.false_positives, c.false_negatives) for c in report.classes
    ]
    assert rows == [("person", 1, 0, 1), ("car", 1, 0, 1), ("dog", 1, 0, 1)]
    assert all(c.precision == 1.0 and c.recall == 0.5 for c in report.classes)
    for name, value in (
        ("understudy_shadow_true_positives_total", 1),
        ("understudy_shadow_false_negatives_total", 1),
        ("understudy_shadow_false_positives_total", 0),
        ("understudy_shadow_precision", 1.0),
        ("understudy_shadow_recall", 0.5),
    ):
        for label in CLASS_NAMES:
            assert metric(srv, name, {"class": label}) == value, (name, label)
    assert metric(srv, "understudy_shadow_frames_compared_total") == 3
    assert metric(srv, "understudy_shadow_overall_recall") == 0.5
    assert metric(srv, "understudy_shadow_teacher_duration_seconds_count") == 3
    # F1 2/3 < 0.8: all three frames saved, with both detection sets
    records = [json.loads(p.read_text()) for p in sorted(save.glob("*.json"))]
    assert report.frames_saved == 3 and len(records) == 3
    assert [len(r["student"]) for r in records] == [1, 1, 1]
    assert [len(r["teacher"]) for r in records] == [2, 2, 2]
    assert [r["teacher"][0]["label"] for r in records] == ["car", "person", "dog"]
    assert records[0]["f1"] == pytest.approx(2 / 3, abs=1e-4) and records[0]["width"] == 64
    # where and when each saved frame was seen (layout version 2)
    assert [r["version"] for r in records] == [2, 2, 2]
    assert [r["camera_id"] for r in records] == ["dock-3"] * 3
    assert [r["frame_id"] for r in records] == [1, 3, 5]
    assert [r["capture_time_ns"] for r in records] == [
        CAPTURE_T0 + k * 1_000_000 for k in (1, 3, 5)
    ]
    for r in records:
        assert r["received_time_ns"] <= r["saved_time_ns"]
    back = [read_record(p) for p in sorted(save.glob("*.json"))]
    assert [b.time_ns for b in back] == [r["capture_time_ns"] for r in records]
    assert [len(b.teacher) for b in back] == [2, 2, 2] and back[0].image.is_file()
    assert not srv.shadow._tags or len(srv.shadow._tags) <= 2  # tags go with their frames
    assert teacher.closed is False  # handed in loaded: the caller closes it
    if sys.platform == "linux":
        assert set(teacher.niceness) == {19}  # the worker thread lowered its priority


def test_teacher_with_other_classes_fails_loading() -> None:
    teacher = FakeTeacher(class_names=("cat", "car", "dog"))
    srv = build_server(FakeDetector(), ServerConfig(port=0), teacher)
    try:
        with pytest.raises(ConfigError, match="differ from the student's"):
            srv.wait_ready(10)
    finally:
        srv.stop(0.5)


def test_shadow_flags_need_a_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_constant_onnx(tmp_path / "m.onnx", _spec())
    assert main(["serve", "--model", str(model), "--shadow-every", "5"]) == 2
    assert "--shadow-every need --shadow-teacher" in capsys.readouterr().err
    args = ["serve", "--model", str(model), "--shadow-teacher", str(tmp_path / "none.onnx")]
    assert main(args) == 2
    assert "--shadow-teacher" in capsys.readouterr().err
    args = ["serve", "--model", str(model), "--shadow-teacher", str(model), "--shadow-every", "0"]
    assert main(args) == 2
    assert "--shadow-every must be >= 1" in capsys.readouterr().err


def _spec() -> ModelSpec:
    return ModelSpec(
        class_names=("person", "car", "dog"),
        input_size=(64, 64),
        output_layout="decoded_xyxy",
        preset="tiny",
        model_hash="abc123",
    )


def test_serve_cli_with_shadow_teacher_and_budget(tmp_path: Path) -> None:
    """The real command: ONNX student, the same ONNX as shadow teacher (full agreement)."""
    from tests.runtime.test_serve_cli import ServeProcess

    model = build_constant_onnx(tmp_path / "tiny.onnx", _spec())
    budget = tmp_path / "budget.yaml"
    budget.write_text("latency: {p99_ms: 10000, input: 64}\nmin_speedup: 3\n")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "runtime.cli", "serve", "--model", str(model), "--port", "0"]
    cmd += ["--threads", "1", "--budget", str(budget), "--shadow-teacher", str(model)]
    cmd += ["--shadow-every", "1", "--shadow-save-dir", str(tmp_path / "save")]
    server = ServeProcess(cmd, env=env)
    try:
        target = server.target()
        server.wait_for("ready", timeout=60)
        with DetectorClient(target, timeout=10) as client:
            assert client.health("understudy.v1.Detector/budget") == "SERVING"
            for i in range(3):
                assert client.detect(solid(i * 40, 96, 128)).detections
                wait_until(lambda i=i: client.model_info().shadow.frames_compared == i + 1, 20)
            info = client.model_info()
        assert info.budget_met and info.default_budget_ms == 10000
        assert "student_p99_ms" in info.budget_report and "speedup_vs_teacher" in info.budget_report
        shadow = info.shadow
        assert (shadow.teacher, shadow.precision, shadow.recall) == ("tiny.onnx", 1.0, 1.0)
        assert shadow.classes[1].true_positives == 3 and shadow.teacher_latency_p50_ms > 0
        assert not list((tmp_path / "save").glob("*.json"))  # full agreement: nothing saved
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    finally:
        server.kill()
