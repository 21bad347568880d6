"""Training and distillation learn: a handful of images is overfitted to a mAP50 that the
same run without learning (lr=0) stays far below; KD-only steps reduce the KD terms; and
a teacher's confident detections on unlabelled frames are the targets a step trains on.

The data and the two runs are the ``handful`` and ``overfit`` fixtures
(tests/distill/handful.py, tests/distill/conftest.py): four 160x120 images listed
``STEPS`` times in the training split, overfitted at 96 px.

Why ``STEPS = 100``: the BatchNorm running statistics (momentum 0.03) keep 0.97^n of
their initial values after n steps, so an eval-mode model lags the weights it has
learned; before about 80 steps the lag, not the weights, decides the mAP. Measured on
this machine with model seeds 0/1/2 (mAP50 in %): 93.3 / 100 / 79.1, and 0 with lr=0.
The KD terms of the KD-only test fell to 0.06-0.4 of their first values with student
seeds 3/4/5, and stayed put with lr=0.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from distill import trainee
from distill.config import load
from distill.distillation import DistillConfig, Distiller, distill
from distill.evaluate import evaluate_path
from runtime.data.dataset import load_split
from runtime.pipeline import Detector
from runtime.postprocess import box_iou
from runtime.preprocess import Letterbox
from tests.distill.handful import PLAIN, SIZE, STEPS

MAP50_MIN = 50.0  # reached: 79.1-100 over three model seeds (see the module docstring)
KD_STEPS = 24


def test_training_overfits_a_handful_of_images(handful: Path, overfit: dict[str, Path]) -> None:
    val = load_split(handful, "val")
    learned = evaluate_path(overfit["learned"], val, progress=False).map50
    frozen = evaluate_path(overfit["frozen"], val, progress=False).map50
    assert learned >= MAP50_MIN, f"mAP50 {learned:.1f} after {STEPS} steps"
    assert frozen < MAP50_MIN / 5, f"mAP50 {frozen:.1f} without learning"


def _kd_cfg(*extra: str) -> DistillConfig:
    return load(DistillConfig, None, [*PLAIN, "kd.teacher_bf16=off", *extra])


def test_kd_only_steps_reduce_the_kd_terms(
    handful: Path, overfit: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A student that learns only from the hybrid KD terms (detection loss weights 0) of
    a fixed teacher brings each term down."""
    steps: list[dict[str, float]] = []
    kd_loss = Distiller.loss

    def recording(self, *args):
        total, logs = kd_loss(self, *args)
        steps.append(logs)
        return total, logs

    monkeypatch.setattr(Distiller, "loss", recording)
    only_kd = ["kd.method=hybrid", "loss.box=0", "loss.cls=0", "loss.dfl=0"]
    cfg = _kd_cfg(*only_kd, "seed=3", f"max_steps={KD_STEPS}")  # seed 3: unlike the teacher
    distill(cfg, str(overfit["learned"]), str(handful), str(tmp_path), progress=False)
    assert len(steps) == KD_STEPS
    for term in ("kd_logit", "kd_ld", "kd_feature"):
        first = np.mean([s[term] for s in steps[:4]])
        last = np.mean([s[term] for s in steps[-4:]])
        assert 0 < last < 0.5 * first, f"{term}: {first:.4f} over the first steps, {last:.4f} last"


def test_pseudo_labels_are_the_targets_of_the_training_step(
    handful: Path, overfit: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an unlabelled frame the step trains on the teacher's detections above
    kd.pseudo_threshold: the boxes and classes the runtime's Detector finds with the
    teacher on that frame, mapped to network pixels."""
    seen: list[torch.Tensor] = []
    detection_loss = trainee.detection_loss

    def recording(out, targets, *args, **kwargs):
        seen.append(targets.detach().clone())
        return detection_loss(out, targets, *args, **kwargs)

    monkeypatch.setattr(trainee, "detection_loss", recording)
    cfg = _kd_cfg("kd.method=pseudo", "kd.unlabelled_ratio=0.5", "max_steps=1")
    teacher = overfit["learned"]
    unlabelled = handful / "unlabelled"
    distill(cfg, str(teacher), str(handful), str(tmp_path), str(unlabelled), progress=False)
    (targets,) = seen
    n_labelled = 2  # batch 4 = 2 labelled images + 2 unlabelled slots (1 frame here)
    got = targets[targets[:, 0] == n_labelled, 1:].numpy()

    frame = cv2.imread(str(unlabelled / "frame.png"))
    kd = cfg.kd
    with Detector(
        teacher, backend="torch", score_threshold=kd.pseudo_threshold, iou_threshold=kd.pseudo_iou
    ) as det:
        dets, _ = det.detect(frame)
    lb = Letterbox.fit(frame.shape[:2], (SIZE, SIZE))
    want = np.concatenate([dets.class_ids[:, None], lb.to_network(dets.boxes)], 1)
    # the runtime clips boxes to the frame, pseudo-labels to the network input
    (h, w), x0, y0 = lb.resized, lb.pad_x, lb.pad_y
    got[:, 1:] = got[:, 1:].clip([x0, y0, x0, y0], [x0 + w, y0 + h, x0 + w, y0 + h])
    assert len(want) >= 1 and len(got) == len(want), (got, want)
    order_got, order_want = np.lexsort(got.T[::-1]), np.lexsort(want.T[::-1])
    np.testing.assert_allclose(got[order_got], want[order_want], atol=0.5)
    # the teacher learnt this frame: its confident detections cover the labelled objects
    truth = load_split(handful, "val").records[0]
    iou = box_iou(lb.to_network(truth.boxes), want[:, 1:].astype(np.float32))
    assert (iou.max(1) >= 0.5).all(), iou
