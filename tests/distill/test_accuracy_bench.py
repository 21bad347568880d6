"""benchmarks.accuracy: the plan, grouping of the single-method runs, dependencies, and
a whole (tiny) benchmark run in parallel that resumes without retraining."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import accuracy
from benchmarks import accuracy_jobs as ajobs
from distill.checkpoint import read_checkpoint


def args(**kw) -> argparse.Namespace:
    base = dict(seeds=[0, 1], only=None, separate=False, recipes=[], set=[])
    return argparse.Namespace(**{**base, **kw})


def test_plan_has_every_row_of_the_issue() -> None:
    names = [ajobs.job_name(r) for r in accuracy.plan(args())]
    assert names[0] == "teacher"
    for expected in ("scratch-s0", "scratch-s1", "hybrid-s0", "hybrid-s1", "logit-s0", "ld-s0",
                     "feature-s0", "cwd-s0", "attention-s0", "scratch-l20-s0", "scratch-l20-s1",
                     "pseudo-l20-s0", "pseudo-l20-s1", "hybrid-s0-int8", "onnx-yolo-s0",
                     "onnx-yolo-s1", "onnx-detr-s0", "teacher-l20-s0", "teacher-l20-s1",
                     "pseudo-own-l20-s0", "pseudo-own-l20-s1"):  # fmt: skip
        assert expected in names


def test_single_methods_are_grouped_unless_separate() -> None:
    runs = accuracy.plan(args())
    jobs = ajobs.group_singles(runs, args())
    groups = [j for j in jobs if "group" in j]
    assert len(groups) == 1 and [r["model"] for r in groups[0]["group"]] == list(accuracy.SINGLE)
    assert ajobs.job_name(groups[0]) == "singles-s0:logit,ld,feature,cwd,attention"
    assert ajobs.needs(groups[0], jobs) == ["teacher"]
    assert len(ajobs.group_singles(runs, args(separate=True))) == len(runs)
    # a lone pending single is a plain run
    lone = [r for r in runs if r["model"] == "cwd"]
    assert ajobs.group_singles(lone, args()) == lone
    # the int8 row waits for its fp32 student; scratch waits for nothing
    int8 = next(r for r in runs if r.get("int8"))
    assert ajobs.needs(int8, runs) == ["hybrid-s0"]
    assert ajobs.needs(runs[1], runs) == []


def test_recipes_join_their_seeds_group_with_their_overrides() -> None:
    a = args(only=["logit"], recipes=["strong-cwd"], set=["epochs=2"])
    runs = accuracy.plan(a)
    assert [ajobs.run_name(r) for r in runs] == ["logit-s0", "hybrid-strong-cwd-s0",
                                                 "hybrid-strong-cwd-s1"]  # fmt: skip
    jobs = ajobs.group_singles(runs, a)
    assert [ajobs.job_name(j) for j in jobs] == ["singles-s0:logit,hybrid+strong-cwd",
                                                 "hybrid-strong-cwd-s1"]  # fmt: skip
    longer = accuracy.plan(args(only=["logit"], recipes=["1.5x-epochs"], seeds=[0]))
    assert [ajobs.job_name(j) for j in ajobs.group_singles(longer, a)] == [
        "logit-s0", "hybrid-1.5x-epochs-s0"]  # another schedule: not in the group  # fmt: skip
    mix = accuracy.plan(args(only=["logit"], recipes=["mixup"], seeds=[0]))
    assert [ajobs.job_name(j) for j in ajobs.group_singles(mix, a)] == [
        "logit-s0", "hybrid-mixup-s0"]  # other batches (a shared kd key): alone  # fmt: skip
    over = accuracy.kd_overrides(runs[1], a)
    assert over[0] == "kd.method=hybrid" and over[-1] == "epochs=2"  # --set wins
    assert all(o in over for o in ajobs.RECIPES["strong-cwd"])
    # a recipe's row is its own: finishing it does not count as the plain hybrid row
    assert ajobs.run_key(runs[1]) != ajobs.run_key(dict(runs[1], recipe=""))
    row = dict(model="hybrid", size="nano", seed=0, labelled_fraction=1.0, precision="fp32")
    assert accuracy.key(row) != accuracy.key(dict(row, recipe="strong-cwd"))


def test_tiny_benchmark_runs_in_parallel_and_resumes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "acc.json"
    common = ["--data", str(tiny_data), "--runs", str(tmp_path / "runs"), "--out", str(out),
              "--seeds", "0", "--set", "img_size=64", "--set", "epochs=1", "--set", "max_steps=1",
              "--set", "batch_size=4", "--set", "eval_every=0", "--set", "bf16=off"]  # fmt: skip
    only = ["--only", "teacher", "scratch", "logit", "ld", "pseudo"]
    only += ["--recipes", "strong"]  # a hybrid recipe trains in the group of its seed
    assert accuracy.main([*common, *only, "--jobs", "2"]) == 0
    rows = json.loads(out.read_text())["rows"]
    got = {(r["model"], r.get("recipe"), r["labelled_fraction"]) for r in rows}
    assert got == {("teacher", None, 1.0), ("scratch", None, 1.0), ("logit", None, 1.0),
                   ("ld", None, 1.0), ("hybrid", "strong", 1.0), ("scratch", None, 0.2),
                   ("pseudo", None, 0.2)}  # fmt: skip
    logit = next(r for r in rows if r["model"] == "logit")
    assert logit["trained_with"] == ["ld", "hybrid+strong"] and "command" in logit
    strong = next(r for r in rows if r.get("recipe") == "strong")
    assert strong["recipe_overrides"] == ajobs.RECIPES["strong"]
    kd = read_checkpoint(tmp_path / "runs" / "hybrid-strong-s0" / "model.pt")["config"]["kd"]
    assert (kd["weights"]["logit"], kd["weights"]["ld"]) == (2.0, 1.0)  # the recipe's weights
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    stamp = (tmp_path / "runs" / "logit-s0" / "model.pt").stat().st_mtime_ns
    assert accuracy.main([*common, *only]) == 0  # everything done: nothing retrained
    assert (tmp_path / "runs" / "logit-s0" / "model.pt").stat().st_mtime_ns == stamp
    assert len(json.loads(out.read_text())["rows"]) == len(rows)


def test_label_scarce_rows_with_a_teacher_of_the_same_labels(
    tiny_data: Path, tmp_path: Path
) -> None:
    """pseudo-own: its teacher is trained on the same seed's 20% only, waits for it, and
    the student learns from it (not from the 100% teacher); --only pseudo-own brings it."""
    runs = accuracy.plan(args(only=["pseudo-own"], seeds=[1]))
    assert [ajobs.job_name(r) for r in runs] == ["teacher-l20-s1", "pseudo-own-l20-s1"]
    assert ajobs.needs(runs[1], runs) == ["teacher-l20-s1"] and ajobs.needs(runs[0], runs) == []
    assert [ajobs.job_name(r) for r in accuracy.plan(args(only=["teacher"]))] == ["teacher"]
    out, root = tmp_path / "acc.json", tmp_path / "runs"
    common = ["--data", str(tiny_data), "--runs", str(root), "--out", str(out), "--seeds", "1",
              "--set", "img_size=64", "--set", "epochs=1", "--set", "max_steps=1",
              "--set", "batch_size=4", "--set", "eval_every=0", "--set", "bf16=off",
              "--teacher-set", "model=small"]  # fmt: skip
    assert accuracy.main([*common, "--only", "pseudo-own"]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"teacher", "pseudo-own"}
    assert rows["teacher"]["labelled_fraction"] == rows["pseudo-own"]["labelled_fraction"] == 0.2
    assert not (root / "teacher").exists()  # the 100% teacher was neither needed nor trained
    teacher = read_checkpoint(root / "teacher-l20-s1" / "model.pt")["config"]
    assert (teacher["labelled_fraction"], teacher["seed"]) == (0.2, 1)  # the student's subset
    student = read_checkpoint(root / "pseudo-own-l20-s1" / "model.pt")
    assert Path(student["teacher"]).parent.name == "teacher-l20-s1"
    assert student["config"]["kd"]["method"] == "hybrid"
    assert (root / "unlabelled-s1").is_dir()  # the other 80% as unlabelled frames


def test_rows_from_a_teacher_in_other_layouts(tiny_data: Path, tmp_path: Path) -> None:
    """onnx-yolo / onnx-detr: the teacher exported in that layout, hybrid, no unlabelled
    frames; --teacher-set changes the teacher's run only."""
    out = tmp_path / "acc.json"
    runs = tmp_path / "runs"
    common = ["--data", str(tiny_data), "--runs", str(runs), "--out", str(out), "--seeds", "0",
              "--set", "img_size=64", "--set", "epochs=1", "--set", "max_steps=1",
              "--set", "batch_size=4", "--set", "eval_every=0", "--set", "bf16=off",
              "--teacher-set", "model=small"]  # fmt: skip
    assert accuracy.main([*common, "--only", "teacher", "onnx-yolo", "onnx-detr"]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"teacher", "onnx-yolo", "onnx-detr"}
    assert rows["onnx-yolo"]["teacher_layout"] == "yolo" and "dense" in rows["onnx-yolo"]["note"]
    assert (runs / "teacher" / "teacher-detr-64.onnx").is_file()
    assert read_checkpoint(runs / "teacher" / "model.pt")["preset"] == "small"
    assert rows["teacher"]["size"] == "small"  # the row names what was trained
    student = read_checkpoint(runs / "onnx-yolo-s0" / "model.pt")
    assert student["preset"] == "nano" and student["teacher"].endswith("teacher-yolo-64.onnx")
    assert student["config"]["kd"]["method"] == "hybrid"
    log = (runs / "onnx-yolo-s0" / "metrics.jsonl").read_text()
    assert "loss_kd_dense" in log and "loss_kd_logit" not in log


def test_results_keep_their_notes_and_render_them(tmp_path: Path) -> None:
    """Notes in accuracy.json survive a run that adds rows, and the Markdown renders them;
    ``python -m benchmarks.accuracy_results`` rewrites the Markdown, not the JSON."""
    from benchmarks import accuracy_results

    path = tmp_path / "accuracy.json"
    row = dict(
        model="scratch",
        size="nano",
        seed=0,
        labelled_fraction=1.0,
        precision="fp32",
        map50_95=50.0,
        map50=60.0,
        train_seconds=1.0,
    )
    accuracy_results.save_results(path, [row], "first")
    assert "notes" not in json.loads(path.read_text())
    doc = json.loads(path.read_text())
    notes = [{"title": "What was tried", "text": "Two things.", "items": ["one", "two"]}]
    path.write_text(json.dumps({**doc, "notes": notes, "title": "A reduced run"}))
    accuracy_results.save_results(path, [row, dict(row, seed=1)], "second")
    doc = json.loads(path.read_text())
    assert doc["notes"] == notes and len(doc["rows"]) == 2 and doc["command"] == "second"
    md = path.with_suffix(".md").read_text()
    assert md.startswith("# A reduced run (") and doc["title"] == "A reduced run"
    assert "## What was tried\n\nTwo things.\n\n- one\n- two\n" in md
    path.with_suffix(".md").unlink()
    before = path.read_text()
    assert accuracy_results.main([str(path)]) == 0
    assert path.read_text() == before
    assert path.with_suffix(".md").read_text() == md


def test_a_run_adding_rows_keeps_what_others_wrote_meanwhile(tmp_path: Path) -> None:
    """A long run holds the rows it read at its start: when it adds one, a note written
    into a row since then and a row another process added both survive."""
    from benchmarks import accuracy_results

    path = tmp_path / "accuracy.json"
    row = dict(model="scratch", size="nano", seed=0, labelled_fraction=1.0, precision="fp32",
               map50_95=50.0, map50=60.0, train_seconds=1.0)  # fmt: skip
    accuracy_results.save_results(path, [row], "long run")
    held = [dict(row)]  # what the long run holds
    doc = json.loads(path.read_text())
    doc["rows"][0]["note"] = "paused twice"
    doc["rows"].append(dict(row, model="hybrid", map50_95=61.0))  # another process's row
    path.write_text(json.dumps(doc))
    accuracy_results.save_results(path, [*held, dict(row, seed=1)], "long run")
    rows = {(r["model"], r["seed"]): r for r in json.loads(path.read_text())["rows"]}
    assert set(rows) == {("scratch", 0), ("scratch", 1), ("hybrid", 0)}
    assert (
        rows[("scratch", 0)]["note"] == "paused twice" and rows[("hybrid", 0)]["map50_95"] == 61.0
    )
    # a value the run itself changed wins over the file's
    accuracy_results.save_results(path, [dict(row, map50_95=52.0)], "rerun")
    rows = {(r["model"], r["seed"]): r for r in json.loads(path.read_text())["rows"]}
    assert (
        rows[("scratch", 0)]["map50_95"] == 52.0 and rows[("scratch", 0)]["note"] == "paused twice"
    )


def test_students_of_another_size() -> None:
    a = args(only=["scratch", "hybrid"], student_sizes=["small"])
    runs = accuracy.plan(a)
    names = [ajobs.job_name(r) for r in runs]
    assert names[-4:] == ["scratch-small-s0", "hybrid-small-s0", "scratch-small-s1",
                          "hybrid-small-s1"]  # fmt: skip
    assert "scratch-s0" in names and "hybrid-s1" in names  # the nano rows stay
    small = runs[-3]
    assert small["size"] == "small" and "model=small" in accuracy.kd_overrides(small, a)
    nano = runs[names.index("hybrid-s0")]
    assert "model=small" not in accuracy.kd_overrides(nano, a)  # nano: the configs' own
    assert accuracy.size_override(nano) == [] and accuracy.size_override(runs[-4]) == [
        "model=small"
    ]
    teacher = accuracy.plan(args(only=["teacher"]))[0]
    assert ajobs.needs(small, [teacher, small]) == ["teacher"]
    assert ajobs.run_key(small) != ajobs.run_key(nano)  # its row is its own
    assert all(r["size"] == "nano" for r in accuracy.plan(args(only=["scratch"])))


def test_redo_reruns_rows_it_names_and_says_what_they_replaced(
    tiny_data: Path, tmp_path: Path
) -> None:
    """--redo: a row in the results file is run again (its model trained where there is
    none) and replaced; the new row carries the old one's numbers and note, and a
    distilled row names the teacher it learned from (digest and mAP)."""
    out, runs = tmp_path / "acc.json", tmp_path / "runs"
    common = ["--data", str(tiny_data), "--runs", str(runs), "--out", str(out), "--seeds", "0",
              "--set", "img_size=64", "--set", "epochs=1", "--set", "max_steps=1",
              "--set", "batch_size=4", "--set", "eval_every=0", "--set", "bf16=off",
              "--teacher-set", "model=small"]  # fmt: skip
    assert accuracy.main([*common, "--only", "teacher", "hybrid"]) == 0
    doc = json.loads(out.read_text())
    hybrid = next(r for r in doc["rows"] if r["model"] == "hybrid")
    digest = hybrid["teacher"]["sha256"]
    assert len(digest) == 12 and hybrid["teacher"]["path"].endswith("teacher/model.pt")
    assert "map50_95" in hybrid["teacher"]
    # another machine: the trained models are gone, the file has rows from elsewhere
    for r in doc["rows"]:
        r["map50_95"], r["note"] = 99.0, "timed while shared"
    out.write_text(json.dumps(doc))
    import shutil

    shutil.rmtree(runs / "hybrid-s0")
    assert accuracy.main([*common, "--only", "hybrid"]) == 0  # done: nothing runs
    assert not (runs / "hybrid-s0").exists()
    stamp = (runs / "teacher" / "model.pt").stat().st_mtime_ns
    assert accuracy.main([*common, "--redo", "teacher", "hybrid"]) == 0
    assert (runs / "hybrid-s0" / "model.pt").is_file()  # trained again
    assert (runs / "teacher" / "model.pt").stat().st_mtime_ns == stamp  # reused, not retrained
    # "hybrid" brings its INT8 row (made from the hybrid model) along, as --only does
    every = json.loads(out.read_text())["rows"]
    assert len(every) == 3  # replaced, not added
    rows = {r["model"]: r for r in every if r["precision"] == "fp32"}
    for r in every:
        assert r["map50_95"] != 99.0 and r["replaced"]["map50_95"] == 99.0
        assert r["replaced"]["note"] == "timed while shared"
        assert "timed while shared" not in r["note"] and "99.00" in r["note"]
    assert rows["hybrid"]["teacher"]["sha256"] == digest  # the same teacher file
    md = out.with_suffix(".md").read_text()
    assert "rerun with --redo; the row it replaced had mAP50-95 99.00" in md
    # redone again from the same trained models: the rows still say what they replaced
    before = json.loads(out.read_text())["rows"]
    assert accuracy.main([*common, "--redo", "hybrid"]) == 0
    after = json.loads(out.read_text())["rows"]
    assert [(r["note"], r["replaced"]) for r in after] == [
        (r["note"], r["replaced"]) for r in before
    ]
    # a teacher file written after the student cannot be the one it learned from
    import os

    os.utime(runs / "teacher" / "model.pt", (2e9, 2e9))
    assert accuracy.main([*common, "--redo", "hybrid"]) == 0
    hybrid = next(r for r in json.loads(out.read_text())["rows"] if r["precision"] == "fp32"
                  and r["model"] == "hybrid")  # fmt: skip
    assert hybrid["teacher"]["newer_than_student"] is True
    # a misspelt row name is an error, not a run that does nothing
    with pytest.raises(SystemExit, match="no rows named hybird"):
        accuracy.main([*common, "--redo", "hybird"])
