"""End-to-end distillation for a few steps on tiny data: native and external ONNX teachers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from distill.checkpoint import read_checkpoint
from distill.config import load
from distill.distillation import METHODS, DistillConfig, distill
from distill.export import export_onnx
from runtime.errors import ConfigError

BASE = ["model=nano", "img_size=64", "batch_size=4", "epochs=1", "max_steps=1", "bf16=off"]


def kd_cfg(*extra: str) -> DistillConfig:
    return load(DistillConfig, None, [*BASE, "kd.teacher_bf16=off", *extra])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_with_a_native_teacher(
    method: str, tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    out = distill(
        kd_cfg(f"kd.method={method}"),
        str(tiny_checkpoint),
        str(tiny_data),
        str(tmp_path),
        unlabelled=str(tiny_data / "unlabelled"),
        progress=False,
    )
    ckpt = read_checkpoint(out)
    assert ckpt["teacher"] == str(tiny_checkpoint)
    # the student checkpoint holds only the student: same keys as a plain detector's
    plain = read_checkpoint(tiny_checkpoint)
    assert set(ckpt["model"]) == set(plain["model"])
    assert "train_state" not in ckpt
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    expected = {"hybrid": {"kd_logit", "kd_ld", "kd_feature"}, "pseudo": set()}.get(
        method, {f"kd_{method}"}
    )
    assert expected <= {k.removeprefix("loss_") for k in record}


def test_adapters_are_saved_for_resume_only(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    distill(
        kd_cfg("kd.method=feature"),
        str(tiny_checkpoint),
        str(tiny_data),
        str(tmp_path),
        progress=False,
    )
    last = read_checkpoint(tmp_path / "last.pt")
    adapters = last["train_state"]["extra_modules"]
    assert adapters and all(k.endswith(("weight", "bias")) for k in adapters[0])


def test_pseudo_labels_come_from_confident_teacher_detections(tiny_checkpoint: Path) -> None:
    from distill.distillation import Distiller, KDConfig
    from distill.teachers import NativeTeacher

    teacher = NativeTeacher(tiny_checkpoint)
    d = Distiller(KDConfig(method="pseudo", pseudo_threshold=0.5), teacher, {}, img_size=64)
    boxes = torch.tensor(
        [[[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [30.0, 30.0, 50.0, 60.0]]]
    )
    scores = torch.tensor([[[0.9, 0.1], [0.8, 0.1], [0.1, 0.4]]])
    pseudo = d.pseudo_labels(boxes, scores)
    assert pseudo.shape == (1, 6)  # the duplicate is suppressed, the 0.4 one is below threshold
    assert pseudo[0, :2].tolist() == [0.0, 0.0] and pseudo[0, 2:].tolist() == [0.0, 0.0, 10.0, 10.0]


def test_external_onnx_teacher(tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path) -> None:
    """An ONNX export of the checkpoint teaches what the checkpoint teaches: its soft
    scores reach the logit KD term (the same value as with the native teacher, not the
    zero of a teacher whose scores are ignored)."""
    onnx_path = tmp_path / "teacher.onnx"
    export_onnx(tiny_checkpoint, onnx_path, img_size=64, validate=False)
    kd_logit = {}
    for name, teacher in (("onnx", onnx_path), ("native", tiny_checkpoint)):
        out = distill(
            kd_cfg("kd.method=logit", "seed=1"),  # seed 1: the student starts unlike the teacher
            str(teacher),
            str(tiny_data),
            str(tmp_path / name),
            unlabelled=str(tiny_data / "unlabelled"),
            progress=False,
        )
        assert read_checkpoint(out)["teacher"] == str(teacher)
        record = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
        kd_logit[name] = record["loss_kd_logit"]  # the first (only) step's KD term
    assert math.isfinite(kd_logit["onnx"]) and kd_logit["onnx"] > 1e-3, kd_logit
    assert kd_logit["onnx"] == pytest.approx(kd_logit["native"], rel=1e-3), kd_logit
    with pytest.raises(ConfigError, match="native teacher"):
        distill(
            kd_cfg("kd.method=ld"),
            str(onnx_path),
            str(tiny_data),
            str(tmp_path / "x"),
            progress=False,
        )


def test_teacher_with_other_classes_is_rejected(tmp_path: Path, tiny_data: Path) -> None:
    from distill.checkpoint import make_checkpoint, save_atomic
    from distill.models.presets import PRESETS, nano

    path = save_atomic(
        make_checkpoint(
            nano(2), preset="nano", scale=PRESETS["nano"], class_names=("a", "b"), img_size=64
        ),
        tmp_path / "t.pt",
    )
    with pytest.raises(ConfigError, match="classes"):
        distill(kd_cfg(), str(path), str(tiny_data), str(tmp_path / "o"), progress=False)


def test_students_distilled_together_equal_students_distilled_alone(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    from distill.distillation import distill_many

    methods = ("logit", "feature", "attention")
    cfgs = [kd_cfg(f"kd.method={m}", "max_steps=2") for m in methods]
    unlabelled = str(tiny_data / "unlabelled")
    alone = [
        distill(
            c,
            str(tiny_checkpoint),
            str(tiny_data),
            str(tmp_path / f"alone-{m}"),
            unlabelled=unlabelled,
            progress=False,
        )
        for c, m in zip(cfgs, methods)
    ]
    together = distill_many(
        cfgs,
        str(tiny_checkpoint),
        str(tiny_data),
        [str(tmp_path / f"together-{m}") for m in methods],
        unlabelled=unlabelled,
        progress=False,
    )
    for a, b in zip(alone, together):
        wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
        assert set(wa) == set(wb)
        for k in wa:
            assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6), k
    logs = [json.loads((Path(p).parent / "metrics.jsonl").read_text()) for p in together]
    assert "loss_kd_feature" in logs[1] and "loss_kd_feature" not in logs[0]


def test_students_distilled_together_must_share_the_batches(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    from distill.distillation import distill_many

    with pytest.raises(ConfigError, match="must share"):
        distill_many(
            [kd_cfg("kd.method=logit"), kd_cfg("kd.method=ld", "img_size=96")],
            str(tiny_checkpoint),
            str(tiny_data),
            [str(tmp_path / "a"), str(tmp_path / "b")],
            progress=False,
        )
    with pytest.raises(ConfigError, match=r"kd\.pseudo_threshold"):
        distill_many(
            [kd_cfg("kd.method=logit"), kd_cfg("kd.method=ld", "kd.pseudo_threshold=0.9")],
            str(tiny_checkpoint),
            str(tiny_data),
            [str(tmp_path / "c"), str(tmp_path / "d")],
            progress=False,
        )


def test_cli_distils_several_methods_in_one_run(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    from runtime.cli import main

    code = main(
        ["distill", "--teacher", str(tiny_checkpoint), "--data", str(tiny_data),
         "--method", "logit", "attention", "--out", str(tmp_path / "m"), "--img-size", "64",
         "--batch-size", "4", "--epochs", "1", "--no-progress", "--set", "max_steps=1",
         "--set", "bf16=off", "--set", "kd.teacher_bf16=off"]
    )  # fmt: skip
    assert code == 0
    for method in ("logit", "attention"):
        ckpt = read_checkpoint(tmp_path / "m" / method / "model.pt")
        assert ckpt["config"]["kd"]["method"] == method


def test_pseudo_without_unlabelled_frames_is_an_error(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    with pytest.raises(ConfigError, match=r"--method pseudo .* pass --unlabelled"):
        distill(
            kd_cfg("kd.method=pseudo"),
            str(tiny_checkpoint),
            str(tiny_data),
            str(tmp_path),
            progress=False,
        )
    assert not (tmp_path / "model.pt").exists()


def test_cli_distil_skip_bad_leaves_out_damaged_images_labels_and_frames(
    tmp_path: Path, damaged_data: Path, tiny_checkpoint: Path, capsys
) -> None:
    from runtime.cli import main

    out = tmp_path / "student"
    tiny = "--img-size 64 --batch-size 4 --epochs 1 --no-progress --set max_steps=1 "
    tiny += "--set bf16=off --set kd.teacher_bf16=off"
    args = ["distill", "--teacher", str(tiny_checkpoint), "--data", str(damaged_data)]
    args += ["--unlabelled", str(damaged_data / "unlabelled"), "--out", str(out), *tiny.split()]
    assert main(args) == 2  # without --skip-bad: the first problem, in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "000000.jpg: not a readable image" in err[0]
    assert main([*args, "--skip-bad"]) == 0
    assert "5 damaged input(s) skipped (5 image(s) left out)" in capsys.readouterr().out
    items = json.loads((out / "skipped.json").read_text())["items"]
    assert [(i["split"], Path(i["file"]).name, i["line"]) for i in items] == [
        ("train", "000001.jpg", None),
        ("train", "000002.txt", 1),
        ("val", "000000.jpg", None),
        ("val", "000001.txt", 1),
        ("unlabelled", "000003.jpg", None),
    ]


def test_mixup_blends_pairs_and_teaches_on_the_blend(tiny_checkpoint: Path) -> None:
    """kd.mixup: the chosen images become blends with a partner of the batch (weight about
    one half), their targets gain the partner's boxes, the teacher runs on the blends, and
    the draws are saved for an exact resume."""
    from distill.distillation import Distiller, KDConfig
    from distill.teachers import NativeTeacher

    teacher = NativeTeacher(tiny_checkpoint)
    seen = []
    real_call = teacher.__call__

    class Spy:
        def __getattr__(self, name):
            return getattr(teacher, name)

        def __call__(self, images, need_features=False):
            seen.append(images.clone())
            return real_call(images, need_features)

    n = 8
    images = torch.stack([torch.full((3, 64, 64), i / 10) for i in range(n)])
    targets = torch.tensor([[i, i % 2, 4.0 * i, 4.0, 4.0 * i + 8, 12.0] for i in range(n)])
    d = Distiller(KDConfig(method="logit", mixup=1.0), Spy(), {}, img_size=64, seed=3)
    state = d.state_dict()
    mixed, context_targets, ctx = d.prepare((images, targets, None))
    assert torch.equal(seen[0], mixed)  # the teacher taught on exactly the blends
    assert torch.equal(ctx.targets, context_targets)
    blended = [i for i in range(n) if not torch.equal(mixed[i], images[i])]
    assert len(blended) >= n - 2  # everyone but a self-paired image
    for i in blended:
        own = context_targets[context_targets[:, 0] == i]
        assert own.shape[0] == 2  # its box and its partner's
        j = int(own[own[:, 2] != 4.0 * i][0, 2] // 4)  # the partner, from its box
        lam = (mixed[i, 0, 0, 0] - images[j, 0, 0, 0]) / (images[i, 0, 0, 0] - images[j, 0, 0, 0])
        assert 0.3 < float(lam) < 0.7 and torch.allclose(
            mixed[i], lam * images[i] + (1 - lam) * images[j], atol=1e-5
        )
    # resume: the same draws from the saved state
    again = Distiller(KDConfig(method="logit", mixup=1.0), teacher, {}, img_size=64, seed=3)
    again.load_state_dict(state)
    assert torch.equal(again.prepare((images, targets, None))[0], mixed)
    # none asked: the batch is untouched
    plain = Distiller(KDConfig(method="logit"), teacher, {}, img_size=64)
    assert torch.equal(plain.prepare((images, targets, None))[0], images)
    with pytest.raises(ConfigError, match=r"kd\.mixup"):
        kd_cfg("kd.mixup=1.5")


def test_distillation_with_mixup_runs_and_resumes(tmp_path: Path, tiny_data: Path,
                                                   tiny_checkpoint: Path) -> None:  # fmt: skip
    cfg = kd_cfg("kd.method=hybrid", "kd.mixup=0.5", "max_steps=2")
    out = distill(cfg, str(tiny_checkpoint), str(tiny_data), str(tmp_path), progress=False)
    last = read_checkpoint(tmp_path / "last.pt")
    assert "mixup" in last["train_state"]["plugin"]  # the draws' state, for an exact resume
    assert read_checkpoint(out)["config"]["kd"]["mixup"] == 0.5
