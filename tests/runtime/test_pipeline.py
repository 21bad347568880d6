from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import open_backend
from runtime.errors import ConfigError, InputError
from runtime.pipeline import Detector
from runtime.types import Detections, StageTimings
from tests.runtime.tiny_models import build_conv_model, build_fixed_model, make_spec, scene

FRAMES = [scene(40 + 7 * i, 90 - 5 * i, seed=i) for i in range(7)]


def assert_same(a: Detections, b: Detections, atol: float = 1e-4) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


def test_detect_batch_and_stream_agree_with_detect(raw_model: Path):
    with Detector(raw_model, max_batch=3) as det:
        assert (det.backend_name, det.precision, det.max_batch) == ("onnxruntime", "fp32", 3)
        assert det.spec == make_spec()
        singles = [det.detect(f) for f in FRAMES]
        assert sum(len(d) for d, _ in singles) > 0
        batched = det.detect_batch(FRAMES)  # chunks of 3, 3, 1
        piped = list(det.stream(FRAMES))
        plain = list(det.stream(FRAMES, pipelined=False))
    for (d, t), (db, tb), (dp, tp), (dq, _) in zip(singles, batched, piped, plain):
        assert_same(d, db)
        assert_same(d, dp)
        assert_same(d, dq)
        assert isinstance(t, StageTimings) and t.total_ms >= t.infer_ms > 0 and t.preprocess_ms > 0
        assert tb.extra["batch_size"] in (3.0, 1.0)
        assert tp.total_ms >= tp.preprocess_ms + tp.infer_ms
    assert [t.extra["batch_size"] for _, t in batched] == [3, 3, 3, 3, 3, 3, 1]


def test_raw_and_decoded_layouts_give_the_same_detections(raw_model: Path, decoded_model: Path):
    with Detector(raw_model) as raw, Detector(decoded_model) as dec:
        for f in FRAMES:
            assert_same(raw.detect(f)[0], dec.detect(f)[0], atol=1e-3)


def test_stream_preserves_order_with_distinct_frames(tmp_path: Path):
    # One box whose position encodes the frame: detections must come back in order.
    spec = make_spec(output_layout="decoded_xyxy")
    model = build_fixed_model(tmp_path / "f.onnx", spec, np.array([[0, 0, 64, 64]], np.float32),
                              np.array([[0.9, 0.0, 0.0]], np.float32))  # fmt: skip
    frames = [np.zeros((10 + i, 64, 3), np.uint8) for i in range(30)]
    with Detector(model) as det:
        out = list(det.stream(iter(frames)))
    assert [float(d.boxes[0, 3]) for d, _ in out] == pytest.approx([10 + i for i in range(30)])


def test_detect_between_stream_results_does_not_disturb_the_stream(raw_model: Path):
    with Detector(raw_model) as det:
        expected = [det.detect(f)[0] for f in FRAMES]
        for (d, _), e in zip(det.stream(FRAMES), expected):
            assert_same(d, e)
            assert_same(det.detect(FRAMES[-1])[0], expected[-1])  # while the worker runs


def test_stream_raises_bad_frame_in_order(raw_model: Path):
    frames = [FRAMES[0], FRAMES[1], np.zeros((5, 5), np.float32), FRAMES[2]]
    for pipelined in (True, False):
        with Detector(raw_model) as det:
            it = det.stream(frames, pipelined=pipelined)
            assert len(list(zip(range(2), it))) == 2
            with pytest.raises(InputError, match=r"frame 2: .*uint8"):
                next(it)


def test_stream_closed_early_stops_the_worker(raw_model: Path):
    def endless():
        i = 0
        while True:
            yield FRAMES[i % len(FRAMES)]
            i += 1

    before = threading.active_count()
    with Detector(raw_model) as det:
        it = det.stream(endless())
        for _ in range(5):
            next(it)
        it.close()
    assert threading.active_count() == before


def test_stream_propagates_source_errors(raw_model: Path):
    def broken():
        yield FRAMES[0]
        raise OSError("camera unplugged")

    with Detector(raw_model) as det, pytest.raises(OSError, match="camera unplugged"):
        list(det.stream(broken()))


def test_input_buffer_is_not_reallocated(raw_model: Path):
    with Detector(raw_model) as det:
        buf = det._pre.buffer
        det.warmup(2)
        det.detect(FRAMES[0])
        det.detect_batch(FRAMES[:2])
        list(det.stream(FRAMES[:3]))
        assert det._pre.buffer is buf


def test_bad_inputs_raise_input_error(raw_model: Path):
    with Detector(raw_model) as det:
        with pytest.raises(InputError, match="uint8"):
            det.detect(np.zeros((10, 10, 3), np.float32))
        with pytest.raises(InputError, match=r"images\[1\]: .*shape"):
            det.detect_batch([FRAMES[0], np.zeros((10, 10, 5), np.uint8)])
        with pytest.raises(InputError, match="empty"):
            det.detect(np.zeros((0, 10, 3), np.uint8))
        assert det.detect_batch([]) == []


def test_odd_images_through_the_pipeline(raw_model: Path):
    big = np.full((3000, 4000, 3), 40, np.uint8)
    big[1000:2000, 1500:2500] = 220
    with Detector(raw_model) as det:
        for image in (
            np.zeros((1, 1, 3), np.uint8),
            big,
            big[:, :, 0],
            np.dstack([big, big[:, :, :1]]),
        ):
            d, _ = det.detect(image)
            h, w = image.shape[:2]
            if len(d):
                assert (
                    d.boxes.min() >= 0
                    and np.all(d.boxes[:, [0, 2]] <= w)
                    and np.all(d.boxes[:, [1, 3]] <= h)
                )
        gray = det.detect(big[:, :, 0])[0]
        assert_same(gray, det.detect(np.dstack([big[:, :, 0]] * 3))[0])
        assert_same(det.detect(big)[0], det.detect(np.dstack([big, big[:, :, :1]]))[0])


def test_detector_from_open_backend_leaves_it_open(raw_model: Path):
    backend = open_backend(raw_model)
    det = Detector(backend, score_threshold=0.99)
    det.close()
    assert backend.infer(np.zeros((1, 3, 64, 64), np.float32))  # still usable
    with pytest.raises(ConfigError):
        Detector(backend, backend="onnxruntime")
    with pytest.raises(ConfigError):
        Detector(backend, max_batch=0)


def test_static_batch_model_uses_single_frame_calls(tmp_path: Path):
    model = build_conv_model(tmp_path / "b1.onnx", make_spec(), batch=1)
    with Detector(model, max_batch=4) as det:
        assert det.max_batch == 1
        res = det.detect_batch(FRAMES[:3])
        assert [t.extra["batch_size"] for _, t in res] == [1, 1, 1]
        for (d, _), f in zip(res, FRAMES[:3]):
            assert_same(d, det.detect(f)[0])


@pytest.mark.parametrize(
    "kwargs",
    [{"score_threshold": 2.0}, {"iou_threshold": -1.0}, {"max_detections": 0}, {"max_batch": 0}],
)
def test_bad_settings_are_config_errors(raw_model: Path, kwargs):
    with pytest.raises(ConfigError):
        Detector(raw_model, **kwargs)
