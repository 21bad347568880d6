"""The compute-fair rule (benchmarks/compute_fair.py) and its rows in the accuracy
benchmark: the student's epochs are those that fit in the teacher's training time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import accuracy
from benchmarks import accuracy_jobs as ajobs
from benchmarks.compute_fair import fair_epochs, run_time
from distill.checkpoint import read_checkpoint
from runtime.errors import DataError
from tests.distill.test_accuracy_bench import args


def write_log(run: Path, epochs: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    return run


def test_time_is_counted_at_the_runs_own_throughput(tmp_path: Path) -> None:
    # the teacher: 4 epochs of 100 images at 2 images/s, its third slowed to 0.5 by another
    # job, and epoch 2 logged twice (a resumed run): 200 s, not the 350 s the epochs took
    teacher = write_log(
        tmp_path / "teacher",
        [dict(epoch=1, step=25, images=100, images_per_s=2.0),
         dict(epoch=2, step=50, images=100, images_per_s=0.1),
         dict(epoch=2, step=50, images=100, images_per_s=2.0),
         dict(epoch=3, step=75, images=100, images_per_s=0.5),
         dict(epoch=4, step=100, images=100, images_per_s=2.0)],
    )  # fmt: skip
    t = run_time(teacher)
    assert (t.epochs, t.images_per_epoch, t.images_per_s) == (4, 100.0, 2.0)
    assert t.seconds == pytest.approx(200.0)
    # the student: 10 s an epoch alone (one slowed epoch of four does not count)
    student = write_log(
        tmp_path / "student",
        [dict(epoch=n, step=25 * n, images=100, images_per_s=v) for n, v in
         zip(range(1, 5), (10.0, 10.0, 10.0, 1.0))],
    )  # fmt: skip
    s = run_time(student)
    assert s.epoch_seconds == pytest.approx(10.0)
    assert fair_epochs(t, s) == 20
    assert fair_epochs(t, run_time(student)) * s.epoch_seconds <= t.seconds  # never over
    slow = write_log(tmp_path / "slow", [dict(epoch=1, step=25, images=100, images_per_s=0.1)])
    assert fair_epochs(t, run_time(slow)) == 1  # an epoch longer than the budget: one


def test_old_logs_count_images_from_steps_and_the_batch(tmp_path: Path) -> None:
    run = write_log(
        tmp_path / "old",
        [dict(epoch=1, step=25, images_per_s=4.0), dict(epoch=2, step=50, images_per_s=4.0)],
    )
    assert run_time(run, batch_size=16).seconds == pytest.approx(2 * 25 * 16 / 4.0)
    with pytest.raises(DataError, match="no `images`; give the run's batch size"):
        run_time(run)
    with pytest.raises(DataError, match=r"no metrics\.jsonl; train this run first"):
        run_time(tmp_path / "none")


def test_fair_rows_are_planned_after_what_they_are_measured_from() -> None:
    runs = accuracy.plan(args())
    names = [ajobs.job_name(r) for r in runs]
    for seed in (0, 1):
        for fair, reference in ajobs.FAIR.items():
            i = names.index(f"{fair}-s{seed}")
            assert names.index(f"{reference}-s{seed}") < i and names.index("teacher") < i
            assert ajobs.needs(runs[i], runs) == ["teacher", f"{reference}-s{seed}"]
    hybrid_fair = next(r for r in runs if r["model"] == "hybrid-fair")
    assert accuracy.kd_overrides(hybrid_fair, args())[0] == "kd.method=hybrid"


def test_fair_students_train_the_epochs_that_fit(tiny_data: Path, tmp_path: Path) -> None:
    out, root = tmp_path / "acc.json", tmp_path / "runs"
    common = ["--data", str(tiny_data), "--runs", str(root), "--out", str(out), "--seeds", "0",
              "--set", "img_size=64", "--set", "epochs=1", "--set", "max_steps=1",
              "--set", "batch_size=4", "--set", "eval_every=0", "--set", "bf16=off",
              "--teacher-set", "model=small"]  # fmt: skip
    assert accuracy.main([*common, "--only", "teacher", "scratch", "hybrid"]) == 0
    logged = json.loads((root / "teacher" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["images"] == 4 and logged["epoch_seconds"] > 0  # what the rule reads
    # known times instead of the tiny runs' few milliseconds: the teacher 200 s, each
    # reference 45.5 s an epoch -> 4 epochs fit
    write_log(root / "teacher", [dict(epoch=n, step=n, images=100, images_per_s=2.0)
                                 for n in range(1, 5)])  # fmt: skip
    for reference in ajobs.FAIR.values():
        write_log(root / f"{reference}-s0", [dict(epoch=1, step=1, images=100, images_per_s=2.2)])
    assert accuracy.main([*common, "--only", *ajobs.FAIR]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    for name, reference in ajobs.FAIR.items():
        fair = rows[name]["fair"]
        assert fair["epochs"] == 4 and fair["reference"] == f"{reference}-s0"
        assert fair["budget_seconds"] == 200.0 and fair["reference_epoch_seconds"] == 45.5
        ckpt = read_checkpoint(root / f"{name}-s0" / "model.pt")
        assert ckpt["config"]["epochs"] == 4  # the rule's epochs win over --set epochs=1
        assert rows[name]["epochs"] == 4
    kd = read_checkpoint(root / "hybrid-fair-s0" / "model.pt")["config"]["kd"]
    assert kd["method"] == "hybrid"
    assert "kd" not in read_checkpoint(root / "scratch-fair-s0" / "model.pt")["config"]
