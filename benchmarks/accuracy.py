"""Accuracy benchmark on the standard synth benchmark (resumable, hours on a 2-core CPU).

Runs (each writes its row to benchmarks/results/accuracy.json as soon as it finishes;
rerunning skips finished rows and reuses trained models under --runs):

- teacher: `large`, configs/bench_teacher.yaml
- scratch: `nano` alone, configs/bench_student.yaml, seeds 0 and 1
- logit / ld / feature / cwd / attention: nano distilled with that method alone, seed 0;
  the five are trained together by default (`distill.distillation.distill_many`: the same
  batches, one teacher pass per step for all five; each student is what a run of its own
  would give), so their `train s` is the wall time of the group; `--separate` trains them
  one by one
- hybrid: nano distilled with the hybrid method, seeds 0 and 1
- scratch-fair / hybrid-fair: the same two under the compute-fair rule, seeds 0 and 1: as
  many epochs as fit in the time the teacher trained on this machine
  (benchmarks/compute_fair.py; the row's ``fair`` says how they were counted)
- label-scarce (labelled_fraction 0.2): "scratch" on 20% of the labelled images, and
  "pseudo" = hybrid distillation on the same 20% + the other 80% as unlabelled frames
  (teacher pseudo-labels + KD targets) from the teacher trained on 100% of the labels,
  seeds 0 and 1; "pseudo-own" = the same, from a `large` teacher trained on that seed's 20%
  only (run `teacher-l20-s<seed>`, its own row: "teacher" at 20%), the protocol a user with
  20% of the labels can follow
- int8: the INT8 Q/DQ export of hybrid seed 0, evaluated through ONNX Runtime
- onnx-yolo (seeds 0 and 1) / onnx-detr (seed 0): nano distilled from the teacher exported
  as a single-output YOLO / a DETR-layout ONNX detector (another family's layout, read by
  distill/teachers/), method hybrid (for such a teacher: the dense term), no unlabelled
  frames; compare with scratch of the same seed
- with ``--student-sizes small ...``: scratch and hybrid students of those presets too,
  every seed (runs ``scratch-small-s0``, ``hybrid-small-s0``, ...)
- with ``--recipes NAME ...``: hybrid students with other KD recipes (``RECIPES`` in
  benchmarks/accuracy_jobs.py; rows carry ``recipe``), for every seed; those with the
  benchmark's schedule train in their seed's single-method group

Every student uses the same epochs, data and schedule (configs/bench_student.yaml; the
distilled ones add configs/bench_distill.yaml's kd section).

A row already in the results file is skipped; ``--redo NAME ...`` runs those rows again
(reusing a trained model under --runs, training it where there is none, e.g. on another
machine) and replaces them, the new row saying what the old one had. Every distilled row
records which teacher it learned from (``teacher``: its mAP50-95 and checkpoint digest).

    python -m benchmarks.accuracy [--only teacher scratch hybrid ...] [--redo hybrid ...]
        [--seeds 0 1] [--recipes strong ...] [--jobs N] [--separate]
        [--teacher-set model=small ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from benchmarks.accuracy_jobs import (
    EXTERNAL,
    FAIR,
    RECIPES,
    SINGLE,
    group_singles,
    job_name,
    label,
    run_key,
    run_name,
    run_parallel,
)
from benchmarks.accuracy_results import key, load_results, save_results
from benchmarks.common import command_line

ROOT = Path(__file__).resolve().parents[1]  # the project: configs/ lives there
RESULTS = ROOT / "benchmarks" / "results"


def plan(args: argparse.Namespace) -> list[dict]:
    """The runs, in order: (key, model, seed, fraction, kind, method)."""
    runs = [dict(model="teacher", size="large", seed=0, frac=1.0)]
    for seed in args.seeds:
        runs.append(dict(model="scratch", size="nano", seed=seed, frac=1.0))
        runs.append(dict(model="hybrid", size="nano", seed=seed, frac=1.0))
    for method in SINGLE:
        runs.append(dict(model=method, size="nano", seed=args.seeds[0], frac=1.0))
    for seed in args.seeds:
        for name in FAIR:
            runs.append(dict(model=name, size="nano", seed=seed, frac=1.0))
    for seed in args.seeds:
        runs.append(dict(model="scratch", size="nano", seed=seed, frac=0.2))
        runs.append(dict(model="pseudo", size="nano", seed=seed, frac=0.2))
        runs.append(dict(model="teacher", size="large", seed=seed, frac=0.2))
        runs.append(dict(model="pseudo-own", size="nano", seed=seed, frac=0.2))
    runs.append(dict(model="hybrid", size="nano", seed=args.seeds[0], frac=1.0, int8=True))
    for seed in args.seeds:
        runs.append(dict(model="onnx-yolo", size="nano", seed=seed, frac=1.0))
    runs.append(dict(model="onnx-detr", size="nano", seed=args.seeds[0], frac=1.0))
    for size in getattr(args, "student_sizes", None) or []:  # other students: both rows
        for seed in args.seeds:
            if size != "nano":
                runs.append(dict(model="scratch", size=size, seed=seed, frac=1.0))
                runs.append(dict(model="hybrid", size=size, seed=seed, frac=1.0))
    asked = [*(args.only or []), *(getattr(args, "redo", None) or [])]
    if asked:
        runs = [r for r in runs if _asked(r, asked)]
    for name in getattr(args, "recipes", None) or []:  # asked for by name: never filtered
        for seed in args.seeds:
            runs.append(dict(model="hybrid", recipe=name, size="nano", seed=seed, frac=1.0))
    return runs


def check_names(args: argparse.Namespace) -> None:
    """Every name given to ``--only`` / ``--redo`` is a row of the plan (a misspelt one
    would silently do nothing)."""
    every = plan(argparse.Namespace(**{**vars(args), "only": None, "redo": []}))
    # a recipe's name matches no row: ``--only NAME --recipes NAME`` runs that recipe alone
    known = {r["model"] for r in every} | {"int8", "teacher-l20", *RECIPES}
    unknown = sorted({*(args.only or []), *(args.redo or [])} - known)
    if unknown:
        raise SystemExit(
            f"--only/--redo: no rows named {', '.join(unknown)}; the rows are "
            f"{', '.join(sorted(known))} (recipes come with --recipes)"
        )


def _asked(r: dict, only: list[str]) -> bool:
    """Whether ``--only`` names this run: "teacher" is the 100% teacher; a 20% teacher comes
    with "pseudo-own" (or "teacher-l20")."""
    if r["model"] == "teacher" and r["frac"] != 1.0:
        return "pseudo-own" in only or "teacher-l20" in only
    return r["model"] in only or ("int8" in only and bool(r.get("int8")))


def teacher_of(r: dict, args: argparse.Namespace) -> Path:
    """The checkpoint a distilled run learns from: the 100% teacher, or for "pseudo-own"
    the teacher trained on the same seed's 20% of the labels."""
    if r["model"] == "pseudo-own":
        return Path(args.runs) / run_name(dict(model="teacher", seed=r["seed"], frac=r["frac"]))
    return Path(args.runs) / "teacher"


def scarce_unlabelled(data: str, seed: int, folder: Path) -> Path:
    """A folder of links to the 80% of training images the label-scarce run may not label."""
    from distill.train import subset_records
    from runtime.data.dataset import load_split

    _, rest = subset_records(load_split(data, "train"), 0.2, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for rec in rest:
        link = folder / rec.path.name
        if not link.exists():
            link.symlink_to(rec.path.resolve())
    return folder


def kd_overrides(r: dict, args: argparse.Namespace) -> list[str]:
    """configs/bench_distill.yaml overrides of a distilled run: method, seed, labels, recipe."""
    hybrids = ("pseudo", "pseudo-own", "hybrid-fair", *EXTERNAL)
    method = "hybrid" if r["model"] in hybrids else r["model"]
    over = [f"kd.method={method}", f"seed={r['seed']}", f"labelled_fraction={r['frac']}"]
    return [*over, *size_override(r), *RECIPES.get(r.get("recipe", ""), []), *args.set]


def fair_plan(r: dict, args: argparse.Namespace) -> dict:
    """A compute-fair run's epochs and how they were counted (benchmarks/compute_fair.py):
    the teacher's training time and the same student's 16-epoch run's time per epoch."""
    from benchmarks.compute_fair import fair_epochs, run_time

    runs = Path(args.runs)
    reference = run_name(dict(r, model=FAIR[r["model"]]))
    teacher = run_time(runs / "teacher", _batch_size(runs / "teacher"))
    student = run_time(runs / reference, _batch_size(runs / reference))
    return {
        "epochs": fair_epochs(teacher, student),
        "budget_seconds": round(teacher.seconds, 1),
        "teacher_images_per_s": round(teacher.images_per_s, 2),
        "reference": reference,
        "reference_epoch_seconds": round(student.epoch_seconds, 1),
    }


def _batch_size(run: Path) -> int | None:
    """The batch size a finished run trained with (its model.pt's config), or None."""
    from distill.checkpoint import read_checkpoint

    model = run / "model.pt"
    return read_checkpoint(model)["config"].get("batch_size") if model.is_file() else None


def size_override(r: dict) -> list[str]:
    """A student of another preset than the configs' ``nano`` (``--student-sizes``)."""
    return [f"model={r['size']}"] if r["model"] != "teacher" and r["size"] != "nano" else []


def train_run(r: dict, args: argparse.Namespace) -> Path:
    from distill.config import load
    from distill.distillation import DistillConfig, distill
    from distill.train import train
    from distill.train_config import TrainConfig

    out = Path(args.runs) / run_name(r)
    over = [f"seed={r['seed']}", f"labelled_fraction={r['frac']}", *size_override(r), *args.set]
    fair = [f"epochs={fair_plan(r, args)['epochs']}"] if r["model"] in FAIR else []
    if r["model"] == "teacher":
        over = [*args.set, *getattr(args, "teacher_set", [])]
        if r["frac"] != 1.0:  # the label-scarce teacher: the seed picks the same 20% subset
            over = [f"seed={r['seed']}", f"labelled_fraction={r['frac']}", *over]
        cfg = load(TrainConfig, ROOT / "configs" / "bench_teacher.yaml", over)
        return train(cfg, args.data, out, resume=True, progress=args.progress)
    if r["model"] in ("scratch", "scratch-fair"):
        cfg = load(TrainConfig, ROOT / "configs" / "bench_student.yaml", [*over, *fair])
        return train(cfg, args.data, out, resume=True, progress=args.progress)
    kd = [*kd_overrides(r, args), *fair]
    cfg = load(DistillConfig, ROOT / "configs" / "bench_distill.yaml", kd)
    unlabelled = None
    if r["model"] in ("pseudo", "pseudo-own"):
        unlabelled = str(
            scarce_unlabelled(args.data, r["seed"], Path(args.runs) / f"unlabelled-s{r['seed']}")
        )
    teacher = teacher_of(r, args) / "model.pt"
    if r["model"] in EXTERNAL:
        teacher = external_teacher(teacher, EXTERNAL[r["model"]], cfg.img_size)
    return distill(
        cfg,
        str(teacher),
        args.data,
        str(out),
        unlabelled=unlabelled,
        resume=True,
        progress=args.progress,
    )


def external_teacher(teacher: Path, kind: str, size: int) -> Path:
    """The teacher checkpoint exported in another family's ``kind`` layout at ``size``
    (once; reused). DETR: 300 queries, the teacher's most confident anchors."""
    from distill.teachers.wrap import export_wrapped

    path = teacher.parent / f"teacher-{kind}-{size}.onnx"
    if not path.is_file():
        export_wrapped(teacher, path, kind, (size, size), queries=300)
    return path


def int8_row(r: dict, args: argparse.Namespace) -> dict:
    """INT8 Q/DQ exports of a student, evaluated through ONNX Runtime. Two variants: uint8
    activations (what ONNX Runtime runs fast on x86; the row's mAP) and symmetric int8
    activations (what TensorRT's explicit quantization accepts; an extra field)."""
    from distill.export import export_onnx
    from distill.quantize import quantize_int8
    from runtime.data.dataset import load_split
    from runtime.evaluate import evaluate_runtime

    out = Path(args.runs) / run_name(r)
    if not (out / "model.pt").is_file():
        raise SystemExit(
            f"int8: {out / 'model.pt'} is not trained yet; run the hybrid row first "
            f"(--only hybrid --seeds {r['seed']}, or --redo hybrid where the file has its row)"
        )
    fp32 = export_onnx(out / "model.pt", out / "student.onnx").path
    split = load_split(args.data, "val")
    result = {}
    for act in ("uint8", "int8"):
        q = quantize_int8(
            fp32, out / f"student.{act}.onnx", args.data, num_images=128, activations=act
        )
        result[act] = evaluate_runtime(q.path, split, progress=args.progress)
    fp = evaluate_runtime(fp32, split, progress=args.progress)
    return {
        "model": r["model"],
        "size": r["size"],
        "seed": r["seed"],
        "labelled_fraction": 1.0,
        "precision": "int8",
        "map50_95": result["uint8"].map50_95,
        "map50": result["uint8"].map50,
        "train_seconds": None,
        "fp32_onnx_map50_95": fp.map50_95,
        "tensorrt_variant_map50_95": result["int8"].map50_95,
        "note": "INT8 Q/DQ, 128 calibration images, head kept float; mAP of the ONNX Runtime "
        "variant (uint8 activations); tensorrt_variant = symmetric int8 activations",
    }


def make_rows(r: dict, args: argparse.Namespace, command: str) -> list[dict]:
    """Train (or quantize) one planned job and return its result rows."""
    if "group" in r:
        return group_rows(r, args, command)
    return [make_row(r, args, command)]


def result_row(r: dict, model_pt: Path) -> dict:
    """The row of a trained run, from its checkpoint and metrics log."""
    from distill.checkpoint import read_checkpoint

    ckpt = read_checkpoint(model_pt)
    m = ckpt["metrics"]
    log_lines = (model_pt.parent / "metrics.jsonl").read_text().splitlines()
    ips = [json.loads(x)["images_per_s"] for x in log_lines]
    return {
        "model": r["model"],
        "size": ckpt.get("preset") or r["size"],  # the teacher's may be --teacher-set
        "seed": r["seed"],
        "labelled_fraction": r["frac"],
        "precision": "fp32",
        "map50_95": m["map50_95"],
        "map50": m["map50"],
        "train_seconds": m.get("train_seconds"),
        "images_per_s": round(sorted(ips)[len(ips) // 2], 1),
        "epochs": ckpt["config"].get("epochs"),
        "img_size": ckpt["img_size"],
        **(
            {"teacher": teacher_provenance(Path(ckpt["teacher"]), model_pt)}
            if ckpt.get("teacher")
            else {}
        ),
        **(
            {"recipe": r["recipe"], "recipe_overrides": RECIPES[r["recipe"]]}
            if r.get("recipe")
            else {}
        ),
    }


def teacher_provenance(path: Path, student: Path) -> dict:
    """Which teacher a distilled run learned from: its mAP50-95 (a checkpoint) and the first
    12 hex digits of the file's SHA-256, so rows distilled from different teacher runs are
    told apart. An ONNX teacher exported from a checkpoint names that checkpoint. The file
    is read now: one written after the ``student`` was (a teacher retrained since) is
    flagged ``newer_than_student``, as it cannot be the one the student learned from."""
    import hashlib

    from distill.checkpoint import read_checkpoint

    if not path.is_file():
        return {"path": str(path), "missing": True}
    out = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}
    if path.stat().st_mtime > student.stat().st_mtime:
        out["newer_than_student"] = True
    source = path if path.suffix == ".pt" else path.parent / "model.pt"
    if source.is_file():
        out["map50_95"] = read_checkpoint(source)["metrics"].get("map50_95")
        if source != path:
            out["exported_from"] = str(source)
    return out


def replacing(row: dict, old: dict | None) -> dict:
    """A redone row (``--redo``): it says what the row it replaces had, and that note
    replaces the old one (a stale note on how the old run was timed would mislead). A row
    redone from the same trained model (same numbers) keeps what it said."""
    if old is None:
        return row
    if all(old.get(k) == row.get(k) for k in ("map50_95", "map50", "train_seconds")):
        # the same trained model read again: the row says what it said, where it ran, and
        # what it replaced
        kept = ("replaced", "note", "command", "device", "trained_with")
        return {**row, **{k: old[k] for k in kept if k in old}}
    kept = ("map50_95", "map50", "train_seconds", "images_per_s", "device", "teacher", "note")
    row["replaced"] = {k: old[k] for k in kept if k in old}
    was = f"{old['map50_95']:.2f}" if isinstance(old.get("map50_95"), (int, float)) else "?"
    note = f"rerun with --redo; the row it replaced had mAP50-95 {was}"
    row["note"] = f"{row['note']}; {note}" if row.get("note") else note
    return row


def group_rows(g: dict, args: argparse.Namespace, command: str) -> list[dict]:
    """Train a group's students together (one teacher pass per step); one row each."""
    from distill.config import load
    from distill.distillation import DistillConfig, distill_many

    members = g["group"]
    outs = [Path(args.runs) / run_name(r) for r in members]
    todo = [(r, o) for r, o in zip(members, outs) if not (o / "model.pt").is_file()]
    if todo:
        cfgs = [
            load(DistillConfig, ROOT / "configs" / "bench_distill.yaml", kd_overrides(r, args))
            for r, _ in todo
        ]
        teacher = Path(args.runs) / "teacher" / "model.pt"
        distill_many(
            cfgs,
            str(teacher),
            args.data,
            [str(o) for _, o in todo],
            resume=True,
            progress=args.progress,
        )
    names = [label(r) for r in members]
    rows = []
    for r, o in zip(members, outs):
        row = result_row(r, o / "model.pt")
        row["trained_with"] = [n for n in names if n != label(r)]
        row["note"] = (
            f"trained together with {', '.join(row['trained_with'])} (same batches, one "
            "teacher pass per step): train_seconds and images_per_s are the group's"
        )
        row["command"] = command
        row["device"] = device_name()
        rows.append(row)
    return rows


def make_row(r: dict, args: argparse.Namespace, command: str) -> dict:
    """Train (or quantize) one planned run and return its result row."""
    if r.get("int8"):
        row = int8_row(r, args)
    else:
        row = result_row(r, train_run(r, args))
    if r["model"] in FAIR:
        row["fair"] = fair_plan(r, args)
        row["note"] = (
            "compute-fair: the epochs of the reference run that fit in the teacher's "
            "training time (benchmarks/compute_fair.py)"
        )
    if r["model"] in EXTERNAL:
        row["teacher_layout"] = EXTERNAL[r["model"]]
        row["note"] = (
            f"distilled from the teacher exported as a {EXTERNAL[r['model']]}-layout ONNX "
            "detector (hybrid: the dense term only), no unlabelled frames"
        )
    row["command"] = command
    row["device"] = device_name()
    return row


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data", default="data/synth", help="the standard synth dataset")
    ap.add_argument("--runs", default="runs/bench", help="where trained models live")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--only", nargs="+", help="only these row names (teacher, scratch, hybrid, int8, ...)"
    )
    ap.add_argument(
        "--redo",
        nargs="+",
        default=[],
        help="run these rows again although the results file has them (a trained model "
        "under --runs is reused) and replace them; they are run with any --only rows, and "
        "--redo hybrid also redoes the recipes asked for with --recipes",
    )
    ap.add_argument(
        "--recipes",
        nargs="+",
        default=[],
        choices=sorted(RECIPES),
        help="also distil hybrid students with these recipes (benchmarks/accuracy_jobs.py)",
    )
    ap.add_argument("--set", action="append", default=[], help="config override for every run")
    ap.add_argument(
        "--teacher-set",
        action="append",
        default=[],
        help="config override for the teacher's run only (after --set), e.g. model=small",
    )
    ap.add_argument(
        "--student-sizes",
        nargs="+",
        default=[],
        help="also train scratch and hybrid students of these presets (e.g. small), every "
        "seed, with the benchmark's recipe (the other rows stay nano)",
    )
    ap.add_argument("--out", default=str(RESULTS / "accuracy.json"))
    ap.add_argument("--progress", action="store_true", help="progress bars (default: log lines)")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, each in its own process (a GPU machine: 3-4 share one GPU well; "
        "give each run fewer loader workers with --set workers=N)",
    )
    ap.add_argument(
        "--separate",
        action="store_true",
        help="train the single-method students one by one instead of together",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this job only
    ap.add_argument("--row-out", help=argparse.SUPPRESS)  # internal: where --one writes its row
    ap.add_argument("--command", help=argparse.SUPPRESS)  # internal: the parent's command line
    return ap


def run_one(args: argparse.Namespace) -> int:
    """A child of ``--jobs``: the job named ``--one`` alone, its rows to ``--row-out``."""
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.jobs))
    everything = plan(argparse.Namespace(**{**vars(args), "only": None, "redo": []}))
    if args.one.startswith("singles-"):
        seed = int(args.one.removeprefix("singles-s").split(":")[0])
        names = args.one.split(":", 1)[1].split(",")
        members = [
            x
            for x in everything
            if label(x) in names and x["seed"] == seed and x["frac"] == 1.0 and not x.get("int8")
        ]
        r = {"group": members, "seed": seed}
    else:
        (r,) = [x for x in everything if job_name(x) == args.one]
    Path(args.row_out).write_text(json.dumps(make_rows(r, args, args.command)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.command = args.command or command_line("accuracy", argv)
    if args.one:
        return run_one(args)
    if not (Path(args.data) / "data.yaml").is_file():
        from distill.data.synth import generate
        from distill.data.synth_config import load_synth_config

        generate(args.data, 0, load_synth_config(ROOT / "configs" / "synth_standard.yaml"))
    check_names(args)
    path = Path(args.out)
    rows = load_results(path)
    done = {key(x) for x in rows}
    redo = args.redo or []
    pending = [r for r in plan(args) if run_key(r) not in done or _asked(r, redo)]
    pending = group_singles(pending, args)

    def on_row(row: dict) -> None:
        old = next((x for x in rows if key(x) == key(row)), None)
        if old is not None:
            rows.remove(old)
            row = replacing(row, old)
        rows.append(row)
        done.add(key(row))
        save_results(path, rows, args.command)
        print(json.dumps(row), flush=True)

    if args.jobs > 1:
        run_parallel(pending, args, on_row)
    else:
        for r in pending:
            for row in make_rows(r, args, args.command):
                on_row(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
