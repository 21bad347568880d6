"""The peer in the accuracy benchmark: Ultralytics YOLO11n trained from scratch on the
standard synth benchmark, the student a user would train instead of distilling.

Ultralytics is AGPL-3.0: it lives in a side environment of its own
(``bash scripts/side_env/ultralytics.sh`` builds ``.side-envs/ultralytics``; this script
runs it when missing) and only its command line is run, as an external tool. This module
never imports it. Steps (resumable: a rerun skips what is done under ``--runs``):

1. a view of the dataset for Ultralytics under ``RUNS/data``: the images the project loads
   (links) with YOLO label files written from the project's records, and a ``data.yaml``
   with absolute paths (``--train-images`` / ``--val-images``: the first N, for a smoke run);
2. with ``--minutes M`` (the equal-compute rule): a one-epoch probe with the same settings,
   then epochs = floor(M * 60 / the probe's first-epoch seconds), at least 1 (the row's
   ``recipe`` is ``"M-min"``, so it sits beside the 16-epoch row); ``--fair [RUN]`` sets M
   to the time the benchmark's teacher and the distilled student of RUN (default
   ``runs/bench/hybrid-s0``) trained on this machine, read from their ``metrics.jsonl`` as
   the compute-fair rule reads them (``benchmarks/compute_fair.py``; the row's ``recipe`` is
   ``"equal-compute"`` and its ``fair`` says how M was counted);
3. ``yolo detect train model=yolo11n.yaml pretrained=False`` with its default recipe and
   the benchmark's settings: imgsz 256, batch 16, CPU, ``close_mosaic=2``, ``--epochs``;
4. ``yolo export format=onnx`` of the final weights (``last.pt``, as the project's rows
   use the final model) at the training size (scored) and at ``--latency-size`` (320, for
   ``python -m benchmarks.latency --peer``), each rewritten into the project's
   ``decoded_xyxy`` layout (``distill.teachers.yolo.to_decoded_xyxy``); the latter is
   copied to ``RUNS/peer-yolo11n.onnx``;
5. the scored ONNX runs through ``runtime.evaluate.evaluate_runtime`` on the val split: the
   same letterbox, score threshold, NMS and pycocotools COCO evaluation as every row of
   ``accuracy.json``; the row ``peer-yolo11n`` goes into ``--out``.

    python -m benchmarks.peer [--epochs 16 | --minutes M | --fair [RUN]] [--seed 0]
        [--data data/synth]
        [--runs runs/peer] [--out benchmarks/results/accuracy.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import command_line
from runtime.data.records import DatasetSplit, ImageRecord
from runtime.errors import ConfigError, MissingPackage, ModelFileError
from runtime.files import write_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
SIDE_ENV = ROOT / ".side-envs" / "ultralytics"
SIDE_ENV_SCRIPT = ROOT / "scripts" / "side_env" / "ultralytics.sh"
NAME = "peer-yolo11n"
# the latency ONNX of the default --runs: what `python -m benchmarks.latency --peer` measures
LATENCY_ONNX = ROOT / "runs" / "peer" / f"{NAME}.onnx"
MODEL_YAML = "yolo11n.yaml"
# results.csv columns (Ultralytics writes them with padding in some versions: keys stripped)
CSV_TIME, CSV_MAP, CSV_MAP50 = "time", "metrics/mAP50-95(B)", "metrics/mAP50(B)"


def side_env_vars() -> dict[str, str]:
    """The environment of the ``yolo`` command: offline, its config in the side env."""
    env_dir = SIDE_ENV
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(env_dir / "config")}


def ensure_side_env() -> Path:
    """The side env's ``yolo`` executable, building the env first when it is missing.
    Raises MissingPackage naming the script and its failed step."""
    env_dir = SIDE_ENV
    yolo = env_dir / "bin" / "yolo"
    if yolo.is_file() and (env_dir / "stamp").is_file():
        return yolo
    print(f"building the Ultralytics side env ({SIDE_ENV_SCRIPT}) ...")
    done = subprocess.run(
        ["bash", str(SIDE_ENV_SCRIPT)], env={**os.environ, "ULTRALYTICS_SIDE_ENV": str(env_dir)}
    )
    if done.returncode != 0 or not yolo.is_file():
        failed = env_dir / "FAILED"
        why = failed.read_text().strip() if failed.is_file() else "see its output above"
        raise MissingPackage(
            f"the peer benchmark needs Ultralytics in {env_dir}: {why}; run bash {SIDE_ENV_SCRIPT}"
        )
    return yolo


def first(split: DatasetSplit, n: int | None) -> DatasetSplit:
    """The split's first ``n`` images (all with ``n`` None)."""
    return split if n is None else replace(split, records=split.records[:n])


def yolo_label_lines(record: ImageRecord) -> list[str]:
    """The YOLO label lines of one image: ``class cx cy w h``, normalized by its size."""
    lines = []
    for (x1, y1, x2, y2), c in zip(record.boxes.tolist(), record.classes.tolist()):
        cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
        w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
        lines.append(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_view(splits: dict[str, DatasetSplit], folder: Path) -> Path:
    """An Ultralytics dataset of exactly these splits under ``folder``: ``images/<split>/``
    (links to the images), ``labels/<split>/`` (label files written from the records, so
    Ultralytics reads the boxes the project loaded) and ``data.yaml`` with absolute paths.
    Returns the ``data.yaml``. Image names are ``<image_id>-<name>``: unique in a split."""
    folder = folder.resolve()
    names = next(iter(splits.values())).class_names
    for split, data in splits.items():
        images, labels = folder / "images" / split, folder / "labels" / split
        for d in (images, labels):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        for r in data.records:
            name = f"{r.image_id:06d}-{r.path.name}"
            (images / name).symlink_to(r.path.resolve())
            lines = yolo_label_lines(r)
            (labels / name).with_suffix(".txt").write_text("".join(x + "\n" for x in lines))
    doc = {
        "path": str(folder),
        **{split: f"images/{split}" for split in splits},
        "names": dict(enumerate(names)),
    }
    path = folder / "data.yaml"
    write_atomic(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def fair_budget(student_run: Path) -> dict[str, Any]:
    """The equal-compute budget: the minutes the benchmark's teacher (``teacher`` beside
    ``student_run``) and the distilled student of ``student_run`` trained on this machine,
    each at the throughput it had alone (:func:`benchmarks.compute_fair.run_time`:
    training steps, evaluations not counted, a distilled step with its teacher pass)."""
    from benchmarks.compute_fair import run_time

    teacher_run = student_run.parent / "teacher"
    teacher, student = run_time(teacher_run), run_time(student_run)
    return {
        "minutes": round((teacher.seconds + student.seconds) / 60, 2),
        "teacher_run": str(teacher_run),
        "teacher_seconds": round(teacher.seconds, 1),
        "student_run": str(student_run),
        "student_seconds": round(student.seconds, 1),
    }


def plan_epochs(minutes: float, first_epoch_seconds: float) -> int:
    """Epochs that fill ``minutes`` of training at the probe's pace: floor(budget / first
    epoch's seconds), at least 1 (the equal-compute rule)."""
    if minutes <= 0 or first_epoch_seconds <= 0:
        raise ConfigError(
            f"--minutes {minutes} and a first epoch of {first_epoch_seconds} s: both must be > 0"
        )
    return max(1, math.floor(minutes * 60 / first_epoch_seconds))


def read_results_csv(path: Path) -> list[dict[str, float]]:
    """Ultralytics' ``results.csv``: one dict per epoch, keys stripped, values floats
    (``epoch``; ``time``: seconds since training started; mAPs as fractions)."""
    if not path.is_file():
        raise ModelFileError(f"{path}: Ultralytics wrote no results.csv; see its log beside it")
    with path.open(newline="") as f:
        rows = [{k.strip(): float(v) for k, v in row.items() if k} for row in csv.DictReader(f)]
    if not rows or CSV_TIME not in rows[0] or CSV_MAP not in rows[0]:
        raise ModelFileError(
            f"{path}: expected columns {CSV_TIME!r} and {CSV_MAP!r} with one row per epoch; "
            "another Ultralytics version? (the side env pins one)"
        )
    return rows


def check_args(args_yaml: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """The settings Ultralytics recorded (``args.yaml``); raises ConfigError when one of
    ``expected`` differs (the benchmark's settings must be the ones it trained with)."""
    got = yaml.safe_load(args_yaml.read_text())
    wrong = {k: (v, got.get(k)) for k, v in expected.items() if str(got.get(k)) != str(v)}
    if wrong:
        listed = ", ".join(f"{k}={b!r} (asked {a!r})" for k, (a, b) in wrong.items())
        raise ConfigError(f"{args_yaml}: Ultralytics trained with {listed}")
    return got


def train_settings(args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    """The ``yolo detect train`` settings: the benchmark's, the rest its default recipe."""
    return {
        "model": MODEL_YAML,
        "pretrained": False,
        "epochs": epochs,
        "imgsz": args.img_size,
        "batch": args.batch,
        "device": "cpu",
        "close_mosaic": args.close_mosaic,
        "seed": args.seed,
    }


def train_command(yolo: Path, data_yaml: Path, project: Path, name: str, s: dict) -> list[str]:
    """``yolo detect train`` with settings ``s``, writing to ``project/name``."""
    pairs = {"data": data_yaml, **s, "project": project.resolve(), "name": name}
    return [str(yolo), "detect", "train", *(f"{k}={v}" for k, v in pairs.items()), "exist_ok=True"]


def run_logged(cmd: list[str], log: Path, cwd: Path) -> float:
    """Run ``cmd`` with the side env's variables, its output to ``log``; its wall seconds.
    Raises ModelFileError with the log's tail when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)}\n  (log: {log})", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=side_env_vars())
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise ModelFileError(f"{cmd[1:3]} failed (exit {done.returncode}); {log} ends:\n{tail}")
    return seconds


def train(yolo: Path, data_yaml: Path, runs: Path, name: str, settings: dict, state: dict) -> dict:
    """Train (or resume) run ``name``; returns its facts: wall seconds, results rows."""
    out = runs / name
    if name not in state:
        last = out / "weights" / "last.pt"
        resumed = last.is_file()  # stopped before the end: Ultralytics resumes from last.pt
        if resumed:
            cmd = [str(yolo), "detect", "train", "resume", f"model={last}"]
        else:
            cmd = train_command(yolo, data_yaml, runs, name, settings)
        seconds = run_logged(cmd, runs / f"{name}.log", runs)
        state[name] = {"wall_seconds": round(seconds, 1), "resumed": resumed}
        write_json_atomic(runs / "state.json", state)
    rows = read_results_csv(out / "results.csv")
    check_args(out / "args.yaml", {k: v for k, v in settings.items() if k != "model"})
    return {**state[name], "rows": rows, "dir": out}


def export(yolo: Path, weights: Path, size: int, dst: Path, names: tuple[str, ...]) -> Path:
    """``yolo export format=onnx imgsz=size`` of ``weights``, rewritten into the project's
    ``decoded_xyxy`` layout at ``dst`` (the runtime serves and scores it like a student)."""
    from distill.teachers.yolo import to_decoded_xyxy
    from runtime.model_spec import ModelSpec

    if dst.is_file():
        return dst
    raw = weights.with_suffix(".onnx")
    raw.unlink(missing_ok=True)
    cmd = [str(yolo), "export", f"model={weights}", "format=onnx", f"imgsz={size}", "device=cpu"]
    run_logged(cmd, dst.with_suffix(".export.log"), weights.parent)
    if not raw.is_file():
        raise ModelFileError(f"yolo export wrote no {raw}; see {dst.with_suffix('.export.log')}")
    kept = dst.with_name(f"{dst.stem}.ultralytics.onnx")
    shutil.move(raw, kept)
    spec = ModelSpec(
        class_names=names,
        input_size=(size, size),
        preset="yolo11n",
        source_checkpoint=str(weights),
        extra={"peer": "Ultralytics YOLO11n (AGPL-3.0), trained by benchmarks/peer.py"},
    )
    return to_decoded_xyxy(kept, dst, spec)


def export_reference(dst: Path, size: int) -> Path | None:
    """A random-weight YOLO11n (the architecture from Ultralytics' packaged yaml, nothing
    downloaded) exported by ``yolo export`` in the side env at ``size`` and rewritten into
    the ``decoded_xyxy`` layout at ``dst``: the architecture's latency without training.
    None, with the reason printed, when the side env is not built (building it takes GBs:
    ``bash scripts/side_env/ultralytics.sh``)."""
    from distill.teachers.yolo import to_decoded_xyxy
    from runtime.model_spec import ModelSpec

    if dst.is_file():
        return dst
    yolo = SIDE_ENV / "bin" / "yolo"
    if not (yolo.is_file() and (SIDE_ENV / "stamp").is_file()):
        print(
            f"skipping the YOLO11n reference: Ultralytics' side env {SIDE_ENV} is not built "
            f"(bash {SIDE_ENV_SCRIPT})"
        )
        return None
    work = dst.parent / f"{dst.stem}.export"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmd = [str(yolo), "export", "model=yolo11n.yaml", "format=onnx", f"imgsz={size}"]
    cmd += ["opset=17", "simplify=False", "dynamic=False", "device=cpu"]
    run_logged(cmd, dst.with_suffix(".export.log"), work)
    found = sorted(work.rglob("*.onnx"))
    if not found:
        raise ModelFileError(
            f"yolo export wrote no .onnx under {work}; see {dst.with_suffix('.export.log')}"
        )
    names = onnx_class_names(found[0])
    spec = ModelSpec(
        class_names=names,
        input_size=(size, size),
        preset="yolo11n-random-weights",
        extra={"reference": "Ultralytics YOLO11n architecture, random weights"},
    )
    out = to_decoded_xyxy(found[0], dst, spec)
    shutil.rmtree(work, ignore_errors=True)
    return out


def onnx_class_names(path: Path) -> tuple[str, ...]:
    """The class names an Ultralytics ONNX export carries (its ``names`` metadata, a dict
    literal of index to name)."""
    import ast

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "names" not in meta:
        raise ModelFileError(f"{path}: no 'names' metadata (not an Ultralytics export?)")
    names = ast.literal_eval(meta["names"])
    return tuple(str(names[i]) for i in sorted(names))


def probe_epoch_seconds(
    yolo: Path, data_yaml: Path, runs: Path, settings: dict, state: dict
) -> tuple[float, float]:
    """Seconds of the first epoch of a one-epoch run with the same settings (the probe of
    ``--minutes``), from its results.csv's ``time`` (training and that epoch's val), and
    the probe's wall seconds."""
    probe = train(yolo, data_yaml, runs, "probe", {**settings, "epochs": 1}, state)
    return probe["rows"][0][CSV_TIME], probe["wall_seconds"]


def score(onnx_path: Path, val: DatasetSplit, progress: bool) -> dict[str, Any]:
    """COCO mAP of an exported model on ``val`` through the runtime pipeline, exactly as the
    project's rows: :func:`runtime.evaluate.evaluate_runtime` (letterbox, score threshold
    ``EVAL_SCORE_THRESHOLD``, NMS, pycocotools)."""
    from runtime.evaluate import evaluate_runtime

    result = evaluate_runtime(onnx_path, val, progress=progress)
    return {"map50_95": result.map50_95, "map50": result.map50, "images": result.images}


def side_env_versions() -> dict[str, str]:
    """Package versions the side env's build recorded (``versions.txt``: ``name version``)."""
    path = SIDE_ENV / "versions.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return dict(line.split()[:2] for line in lines if len(line.split()) >= 2)


def build_row(
    args: argparse.Namespace, trained: dict, scored: dict, command: str, extra: dict
) -> dict[str, Any]:
    """The ``accuracy.json`` row of the peer (the rows' schema, plus what says how it was
    trained and what Ultralytics' own validator gave on the same val images)."""
    from runtime.measure import machine

    rows = trained["rows"]
    times = [r[CSV_TIME] for r in rows]
    epoch_s = sorted(b - a for a, b in zip([0.0, *times], times))
    return {
        "model": NAME,
        "size": "yolo11n",
        "seed": args.seed,
        "labelled_fraction": 1.0,
        "precision": "fp32",
        "map50_95": scored["map50_95"],
        "map50": scored["map50"],
        "train_seconds": trained["wall_seconds"],
        "epochs": len(rows),
        "img_size": args.img_size,
        "batch": args.batch,
        "epoch_seconds_median": round(epoch_s[len(epoch_s) // 2], 1),
        "ultralytics_val_map50_95": round(rows[-1][CSV_MAP] * 100, 2),
        "ultralytics_val_map50": round(rows[-1][CSV_MAP50] * 100, 2),
        "val_images": scored["images"],
        **extra,
        "command": command,
        "machine": machine(),
        "device": "cpu",
        "note": "Ultralytics YOLO11n from scratch (yolo11n.yaml, its default recipe; imgsz, "
        "batch, close_mosaic and epochs set by the benchmark), trained by its own CLI in a "
        "side env; its final weights exported to ONNX and scored by the project's COCO "
        "evaluation (runtime pipeline, same val images and thresholds as the other rows); "
        "ultralytics_val_*: its own validator (conf 0.001, NMS IoU 0.7, 300 detections) on "
        "the same images at its last epoch; train_seconds: wall time of `yolo detect train` "
        "(its CPU defaults: min(8, cores - 1) torch threads, each epoch validated)",
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Everything (see the module docstring); returns the row."""
    from runtime.data.dataset import load_split

    runs = Path(args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    state_path = runs / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    train_split = first(load_split(args.data, "train"), args.train_images)
    val = first(load_split(args.data, "val"), args.val_images)
    data_yaml = write_view({"train": train_split, "val": val}, runs / "data")
    yolo = ensure_side_env()
    extra: dict[str, Any] = {"train_images": len(train_split.records)}
    epochs = args.epochs
    if args.fair:
        extra["fair"] = fair_budget(Path(args.fair))
        args.minutes = extra["fair"]["minutes"]
    if args.minutes is not None:
        first_s, probe_wall = probe_epoch_seconds(
            yolo, data_yaml, runs, train_settings(args, 1), state
        )
        epochs = plan_epochs(args.minutes, first_s)
        recipe = "equal-compute" if args.fair else f"{args.minutes:g}-min"
        extra |= {"recipe": recipe, "minutes": args.minutes}
        extra["first_epoch_seconds"] = round(first_s, 1)
        extra["probe_seconds"] = probe_wall
        print(f"probe: first epoch {first_s:.1f} s -> {epochs} epochs in {args.minutes} min")
    name = f"train-e{epochs}-s{args.seed}"
    trained = train(yolo, data_yaml, runs, name, train_settings(args, epochs), state)
    weights = trained["dir"] / "weights" / "last.pt"
    names = val.class_names
    scored_onnx = export(yolo, weights, args.img_size, runs / f"{name}-{args.img_size}.onnx", names)
    latency_onnx = export(
        yolo, weights, args.latency_size, runs / f"{name}-{args.latency_size}.onnx", names
    )
    link = runs / f"{NAME}.onnx"  # what `python -m benchmarks.latency --peer` measures
    shutil.copyfile(latency_onnx, link)
    extra["latency_onnx"] = str(link)
    scored = score(scored_onnx, val, args.progress)
    versions = side_env_versions()
    extra |= {"resumed": trained["resumed"], "scored_onnx": str(scored_onnx)}
    extra |= {"ultralytics": versions.get("ultralytics"), "peer_torch": versions.get("torch")}
    return build_row(args, trained, scored, command, extra)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data", default="data/synth", help="the dataset (the project's formats)")
    ap.add_argument("--runs", default="runs/peer", help="where the peer's runs live")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=16, help="epochs (default: 16)")
    budget.add_argument(
        "--minutes",
        type=float,
        help="train for about this long instead: epochs from a one-epoch probe",
    )
    budget.add_argument(
        "--fair",
        nargs="?",
        const="runs/bench/hybrid-s0",
        metavar="RUN",
        help="equal compute: --minutes = the time the benchmark teacher and the distilled "
        "student RUN (default runs/bench/hybrid-s0) trained on this machine",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--img-size", type=int, default=256, help="training and scoring size")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--close-mosaic", type=int, default=2)
    ap.add_argument("--latency-size", type=int, default=320, help="size of the latency ONNX")
    ap.add_argument("--train-images", type=int, help="only the first N training images")
    ap.add_argument("--val-images", type=int, help="only the first N val images")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "accuracy.json"))
    ap.add_argument("--progress", action="store_true", help="a progress bar while scoring")
    return ap


def main(argv: list[str] | None = None) -> int:
    from benchmarks.accuracy_results import key, load_results, save_results

    args = build_parser().parse_args(argv)
    command = command_line("peer", argv)
    row = run(args, command)
    path = Path(args.out)
    rows = [r for r in load_results(path) if key(r) != key(row)] + [row]
    save_results(path, rows, command)
    print(json.dumps(row), flush=True)
    print(f"wrote {path} ({path.with_suffix('.md').name}, {path.with_suffix('.png').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
