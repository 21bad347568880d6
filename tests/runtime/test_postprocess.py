from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import ConfigError, ModelFileError
from runtime.postprocess import (
    Postprocessor,
    batched_nms,
    box_iou,
    dfl_decode,
    make_anchors,
    nms_numpy,
    nms_opencv,
)
from runtime.preprocess import Letterbox
from tests.runtime.tiny_models import make_spec

BOXES = np.array(
    [
        [0, 0, 10, 10],  # 0: class 0, best
        [1, 1, 11, 11],  # 1: class 0, IoU 0.68 with 0 -> suppressed
        [1, 1, 11, 11],  # 2: class 1, same place, other class -> kept
        [20, 20, 30, 30],  # 3: class 0, elsewhere -> kept
        [0, 0, 10, 10],  # 4: class 1, IoU 0.68 with 2 but lower -> suppressed
    ],
    np.float32,
)
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
CLASSES = np.array([0, 0, 1, 0, 1], np.int32)


def test_box_iou_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])  # a degenerate box matches nothing


@pytest.mark.parametrize("use_opencv", [True, False])
def test_class_aware_nms(use_opencv):
    keep = batched_nms(BOXES, SCORES, CLASSES, 0.45, 100, use_opencv=use_opencv)
    assert keep.tolist() == [0, 2, 3]
    agnostic = batched_nms(
        BOXES, SCORES, CLASSES, 0.45, 100, class_agnostic=True, use_opencv=use_opencv
    )
    assert agnostic.tolist() == [0, 3]
    assert batched_nms(BOXES, SCORES, CLASSES, 0.45, 2, use_opencv=use_opencv).tolist() == [0, 2]
    assert batched_nms(BOXES, SCORES, CLASSES, 0.7, 100, use_opencv=use_opencv).tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
    empty = batched_nms(
        np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int32), 0.5, 10, use_opencv=use_opencv
    )
    assert empty.shape == (0,)


@pytest.mark.parametrize("nms", [nms_numpy, nms_opencv])
def test_iou_threshold_is_exclusive_of_lower_overlaps(nms):
    base = [0.0, 0.0, 10.0, 10.0]
    iou_04 = [0.0, 0.0, 4.0, 10.0]  # inside base: IoU 0.4
    iou_05 = [0.0, 0.0, 10.0, 5.0]  # IoU 0.5
    boxes = np.array([base, iou_04, iou_05])
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.45, 10).tolist() == [0, 1]
    assert nms(boxes, scores, 0.55, 10).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.35, 10).tolist() == [0]


def test_numpy_and_opencv_nms_agree_on_random_boxes():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 300))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(2, 80, (n, 2))], axis=1)
        scores = rng.permutation(n).astype(np.float32) / n + 0.01  # distinct scores
        classes = rng.integers(0, 4, n).astype(np.int32)
        iou = float(rng.uniform(0.2, 0.8))
        a = batched_nms(boxes, scores, classes, iou, 50, use_opencv=True)
        b = batched_nms(boxes, scores, classes, iou, 50, use_opencv=False)
        assert a.tolist() == b.tolist(), trial


def test_make_anchors_order():
    points, strides = make_anchors((64, 32), (8, 16, 32))
    assert points.shape == (8 * 4 + 4 * 2 + 2 * 1, 2)
    np.testing.assert_array_equal(points[:5], [[4, 4], [12, 4], [20, 4], [28, 4], [4, 12]])
    np.testing.assert_array_equal(points[32], [8, 8])  # first cell of stride 16
    np.testing.assert_array_equal(points[-1], [16, 48])  # last cell of stride 32
    assert strides[0] == 8 and strides[32] == 16 and strides[-1] == 32


def test_dfl_decode_constructed_distribution():
    reg_max = 4
    logits = np.full((2, 4, reg_max), -50.0, np.float32)
    for side, k in enumerate([1, 2, 3, 0]):  # one-hot: l=1, t=2, r=3, b=0
        logits[0, side, k] = 50.0
    logits[1, :, 1:3] = 0.0  # two equal bins 1 and 2 -> expectation 1.5 on every side
    points = np.array([[4.0, 4.0], [40.0, 24.0]], np.float32)
    strides = np.array([8.0, 16.0], np.float32)
    boxes = dfl_decode(logits.reshape(2, 16), points, strides)
    np.testing.assert_allclose(boxes[0], [4 - 8, 4 - 16, 4 + 24, 4 + 0], atol=1e-5)
    np.testing.assert_allclose(boxes[1], [40 - 24, 24 - 24, 40 + 24, 24 + 24], atol=1e-5)


def decoded_outputs(boxes, scores):
    return {
        "boxes": np.asarray(boxes, np.float32)[None],
        "scores": np.asarray(scores, np.float32)[None],
    }


def one_hot_scores(values, classes, num_classes=3):
    s = np.zeros((len(values), num_classes), np.float32)
    s[np.arange(len(values)), classes] = values
    return s


def test_postprocessor_thresholds_and_mapping():
    spec = make_spec(output_layout="decoded_xyxy")  # 64x64 input
    lb = Letterbox.fit((32, 64), (64, 64))  # scale 1, pad_y 16
    boxes = [[10, 20, 30, 40], [40, 20, 50, 30], [0, 0, 63, 10], [-5, 10, 20, 60], [5, 20, 15, 30]]
    scores = one_hot_scores([0.9, 0.25, 0.95, 0.8, 0.2501], [0, 1, 2, 1, 2])
    post = Postprocessor(spec, score_threshold=0.25)
    d = post(decoded_outputs(boxes, scores), [lb])[0]
    # box 1 has score == threshold (dropped); box 2 lies in the padding (dropped).
    np.testing.assert_allclose(d.scores, [0.9, 0.8, 0.2501], rtol=1e-6)
    assert d.class_ids.tolist() == [0, 1, 2]
    assert (
        d.boxes.dtype == np.float32
        and d.scores.dtype == np.float32
        and d.class_ids.dtype == np.int32
    )
    np.testing.assert_allclose(d.boxes, [[10, 4, 30, 24], [0, 0, 20, 32], [5, 4, 15, 14]])
    assert (
        len(Postprocessor(spec, score_threshold=0.85)(decoded_outputs(boxes, scores), [lb])[0]) == 1
    )


def test_postprocessor_max_detections_and_topk():
    spec = make_spec(output_layout="decoded_xyxy")
    lb = Letterbox.fit((64, 64), (64, 64))
    boxes = [[i * 10, 0, i * 10 + 8, 8] for i in range(6)]  # disjoint
    scores = one_hot_scores([0.3, 0.9, 0.5, 0.8, 0.4, 0.7], [0] * 6)
    out = decoded_outputs(boxes, scores)
    d = Postprocessor(spec, max_detections=3)(out, [lb])[0]
    np.testing.assert_allclose(d.scores, [0.9, 0.8, 0.7])
    d = Postprocessor(spec, pre_nms_topk=2)(out, [lb])[0]
    np.testing.assert_allclose(d.scores, [0.9, 0.8])
    d = Postprocessor(spec)(decoded_outputs(boxes, np.zeros_like(scores)), [lb])[0]
    assert len(d) == 0 and d.boxes.shape == (0, 4)


def test_postprocessor_nms_overlaps_and_class_agnostic():
    spec = make_spec(output_layout="decoded_xyxy")
    lb = Letterbox.fit((64, 64), (64, 64))
    out = decoded_outputs(BOXES, one_hot_scores(SCORES, CLASSES))
    for use_opencv in (True, False):
        d = Postprocessor(spec, use_opencv_nms=use_opencv)(out, [lb])[0]
        np.testing.assert_allclose(d.boxes, BOXES[[0, 2, 3]])
        d = Postprocessor(spec, class_agnostic=True, use_opencv_nms=use_opencv)(out, [lb])[0]
        np.testing.assert_allclose(d.boxes, BOXES[[0, 3]])


def test_raw_dfl_postprocessor_decodes_and_batches():
    spec = make_spec()  # raw_dfl, 64x64, reg_max 4, 3 classes
    a, r = spec.num_anchors, spec.reg_max
    dist = np.full((2, a, 4, r), -50.0, np.float32)
    dist[..., 1] = 50.0  # every side: one stride
    logits = np.full((2, a, 3), -10.0, np.float32)
    logits[0, 0, 2] = 3.0  # image 0: anchor 0 (centre (4, 4), stride 8), class 2
    logits[1, a - 1, 1] = 1.0  # image 1: last anchor (centre (48, 48), stride 32), class 1
    out = {"box_dist": dist.reshape(2, a, 4 * r), "cls_logits": logits}
    lbs = [Letterbox.fit((64, 64), (64, 64)), Letterbox.fit((32, 128), (64, 64))]
    d0, d1 = Postprocessor(spec)(out, lbs)
    np.testing.assert_allclose(d0.boxes, [[0, 0, 12, 12]], atol=1e-4)
    np.testing.assert_allclose(d0.scores, [1 / (1 + np.exp(-3.0))], rtol=1e-6)
    assert d0.class_ids.tolist() == [2]
    # image 1: scale 0.5, pad_y 24; network box (16, 16, 80, 80) clipped to (16, 24, 64, 40)
    np.testing.assert_allclose(d1.boxes, [[32, 0, 128, 32]], atol=1e-4)
    assert d1.class_ids.tolist() == [1]
    single = Postprocessor(spec)({k: v[1:] for k, v in out.items()}, lbs[1:])[0]
    np.testing.assert_array_equal(single.boxes, d1.boxes)


def test_postprocessor_rejects_mismatched_outputs():
    spec = make_spec()
    post = Postprocessor(spec)
    lb = Letterbox.fit((64, 64), (64, 64))
    a = spec.num_anchors
    with pytest.raises(ModelFileError, match="lack"):
        post({"boxes": np.zeros((1, a, 4)), "scores": np.zeros((1, a, 3))}, [lb])
    with pytest.raises(ModelFileError, match="do not match"):
        post({"box_dist": np.zeros((1, a, 16)), "cls_logits": np.zeros((1, a, 5))}, [lb])
    with pytest.raises(ModelFileError, match="A = "):
        post({"box_dist": np.zeros((1, a + 1, 16)), "cls_logits": np.zeros((1, a + 1, 3))}, [lb])


@pytest.mark.parametrize(
    "kwargs",
    [{"score_threshold": 1.5}, {"iou_threshold": -0.1}, {"max_detections": 0}, {"pre_nms_topk": 0}],
)
def test_postprocessor_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        Postprocessor(make_spec(), **kwargs)
