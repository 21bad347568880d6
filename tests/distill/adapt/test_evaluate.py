"""Agreement scores on site frames: per-class P/R/F1 by the shadow teacher's matching at
the operating point, and mAP against the teacher's pseudo-labels (pycocotools)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from distill.adapt.evaluate import score_against
from runtime.types import Detections

NAMES = ("a", "b", "c")


def dets(rows) -> Detections:
    if not rows:
        return Detections.empty()
    a = np.array(rows, np.float64)
    return Detections(
        a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int32)
    )


@pytest.fixture
def frames(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(2):
        p = tmp_path / f"{i}.jpg"
        cv2.imwrite(str(p), np.zeros((100, 100, 3), np.uint8))
        paths.append(p)
    return paths


REFERENCE = {
    1: dets([(0, 0, 20, 20, 0.9, 0), (50, 50, 80, 80, 0.8, 1)]),
    2: dets([(10, 10, 40, 40, 0.7, 2)]),
}


def test_a_student_that_matches_the_teacher_scores_100(frames: list[Path]) -> None:
    s = score_against(REFERENCE, REFERENCE, frames, [(100, 100)] * 2, NAMES, 0.25)
    assert (s.precision, s.recall, s.f1) == (100.0, 100.0, 100.0)
    assert s.map50_95 == pytest.approx(100.0) and s.map50 == pytest.approx(100.0)
    assert s.per_class["b"] == {
        "precision": 100.0,
        "recall": 100.0,
        "f1": 100.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
    }
    assert s.frames == 2


def test_agreement_counts_on_a_constructed_case(frames: list[Path]) -> None:
    student = {
        # frame 1: class a found; a wrong-class box on b's place; a low-score box (below
        # the operating point: not served, so not a false positive, but it counts for mAP)
        1: dets([(0, 0, 20, 20, 0.9, 0), (50, 50, 80, 80, 0.6, 2), (50, 50, 80, 80, 0.1, 1)]),
        # frame 2: nothing
    }
    s = score_against(student, REFERENCE, frames, [(100, 100)] * 2, NAMES, 0.25)
    # tp: a; fp: c on frame 1; fn: b on frame 1, c on frame 2
    assert s.precision == pytest.approx(50.0) and s.recall == pytest.approx(100 / 3, abs=0.01)
    assert s.f1 == pytest.approx(200 * 1 / (2 + 1 + 2), abs=0.01)
    assert s.per_class["a"]["f1"] == 100.0
    assert s.per_class["b"] == {
        "precision": None,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 1,
    }
    assert s.per_class["c"]["fp"] == 1 and s.per_class["c"]["fn"] == 1
    # mAP vs the pseudo-labels: a is perfect, b found only at score 0.1, c missed
    assert 0 < s.map50_95 < 100
