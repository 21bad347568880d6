"""Jobs of the accuracy benchmark (``benchmarks.accuracy``): their names, which runs
are trained together, what each waits for, and running several at once.

A planned run is a dict (model, size, seed, frac[, int8]); a group job is
``{"group": [runs], "seed": s}`` (the single-method students trained together).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

SINGLE = ("logit", "ld", "feature", "cwd", "attention")

# Rows distilled from the benchmark's teacher exported as another family's ONNX detector
# (distill/teachers/wrap.py), at the students' input size, with the hybrid method (which
# keeps what such a teacher can give: the dense term) and no unlabelled frames: row name ->
# layout kind.
EXTERNAL = {"onnx-yolo": "yolo", "onnx-detr": "detr"}

# Rows under the compute-fair rule (benchmarks/compute_fair.py): row name -> the row whose
# run (same seed, the benchmark's 16 epochs) gives the student's time per epoch.
FAIR = {"scratch-fair": "scratch", "hybrid-fair": "hybrid"}

# Other hybrid recipes to compare with configs/bench_distill.yaml's (``--recipes NAME``): the
# overrides each adds on top of it. Rows carry the recipe's name; their runs live in
# runs/bench/hybrid-NAME-sS and train in the single-method group of their seed (unless
# they change what shapes the batches).
RECIPES = {
    # logit and LD weighted 4x: late in training they fall to ~0.1 of the detection loss
    "strong": ["kd.weights.logit=2.0", "kd.weights.ld=1.0"],
    # the same plus channel-wise distillation (CWD) on the neck features
    "strong-cwd": [
        "kd.weights.logit=2.0",
        "kd.weights.ld=1.0",
        "kd.hybrid=[logit, ld, feature, cwd]",
    ],
    # #19's "function matching": half the labelled images blended in pairs (MixUp), the
    # teacher teaching on exactly the blend the student sees; changes the shared batches,
    # so it trains on its own
    "mixup": ["kd.mixup=0.5"],
    # a probe, not a comparable row: the benchmark's hybrid on 1.5x the schedule (is the
    # student short of capacity or of training?); trains on its own (another schedule
    # cannot share batches: see distill.train.SHARED_KEYS)
    "1.5x-epochs": ["epochs=24"],
}


def label(r: dict) -> str:
    """A run's name within its group: the method, plus ``+recipe`` for a hybrid recipe."""
    return r["model"] + (f"+{r['recipe']}" if r.get("recipe") else "")


def groupable(r: dict) -> bool:
    """Trained in its seed's single-method group: a single method or a hybrid recipe."""
    full = r["frac"] == 1.0 and not r.get("int8")
    if r.get("recipe"):  # students trained together agree on what shapes the batches
        from distill.distillation import SHARED_KD_KEYS
        from distill.train import SHARED_KEYS

        keys = [o.split("=", 1)[0] for o in RECIPES[r["recipe"]]]
        top = {k.split(".", 1)[0] for k in keys}
        kd = {k.removeprefix("kd.") for k in keys if k.startswith("kd.")}
        return full and not top & set(SHARED_KEYS) and not kd & set(SHARED_KD_KEYS)
    return full and r["model"] in SINGLE


def run_name(r: dict) -> str:
    frac = "" if r["frac"] == 1.0 else f"-l{int(r['frac'] * 100)}"
    recipe = f"-{r['recipe']}" if r.get("recipe") else ""
    if r["model"] == "teacher":  # the benchmark's teacher; a label-scarce one per seed
        return "teacher" if not frac else f"teacher{frac}-s{r['seed']}"
    size = f"-{r['size']}" if r.get("size", "nano") != "nano" else ""  # --student-sizes
    return f"{r['model']}{size}{recipe}{frac}-s{r['seed']}"


def group_singles(pending: list[dict], args: argparse.Namespace) -> list[dict]:
    """Unless --separate: the pending single-method runs of a seed become one group job."""
    if args.separate:
        return pending
    out, groups = [], {}
    for r in pending:
        if groupable(r):
            if r["seed"] not in groups:
                groups[r["seed"]] = {"group": [], "seed": r["seed"]}
                out.append(groups[r["seed"]])
            groups[r["seed"]]["group"].append(r)
        else:
            out.append(r)
    return [g["group"][0] if "group" in g and len(g["group"]) == 1 else g for g in out]


def run_key(r: dict) -> tuple:
    if "group" in r:
        return ("group", r["seed"])
    precision = "int8" if r.get("int8") else "fp32"
    return (r["model"], r["size"], r["seed"], r["frac"], precision, r.get("recipe", ""))


def job_name(r: dict) -> str:
    if "group" in r:  # e.g. singles-s0:logit,ld,feature,hybrid+strong
        return f"singles-s{r['seed']}:" + ",".join(label(x) for x in r["group"])
    return run_name(r) + ("-int8" if r.get("int8") else "")


def needs(r: dict, runs: list[dict]) -> list[str]:
    """Job names that must finish before ``r`` starts (the teacher; hybrid for int8)."""
    names = {job_name(x) for x in runs}
    if "group" in r:
        deps = ["teacher"]
    elif r.get("int8"):
        deps = [run_name(dict(r, int8=False))]
    elif r["model"] in ("teacher", "scratch"):
        deps = []
    elif r["model"] in FAIR:  # the teacher's time, and the same student's 16-epoch run
        deps = ["teacher", run_name(dict(r, model=FAIR[r["model"]]))]
    elif r["model"] == "pseudo-own":  # the teacher trained on the same 20%
        deps = [run_name(dict(model="teacher", seed=r["seed"], frac=r["frac"]))]
    else:
        deps = ["teacher"]
    return [d for d in deps if d in names]


def child_env() -> dict[str, str]:
    """This process's environment, with the folder that holds the ``benchmarks`` package
    first on PYTHONPATH: a child finds the same benchmarks whatever its working folder."""
    import os

    project = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": project + (os.pathsep + path if path else "")}


def run_parallel(pending: list[dict], args: argparse.Namespace, on_row) -> None:
    """Up to ``--jobs`` runs at once, each in its own process (they share the GPU)."""
    import signal
    import subprocess
    import tempfile
    import time

    base = [sys.executable, "-m", "benchmarks.accuracy", "--data", args.data]  # one job each
    base += ["--runs", args.runs, "--jobs", str(args.jobs)]
    base += [x for s in args.set for x in ("--set", s)]
    base += [x for s in getattr(args, "teacher_set", []) for x in ("--teacher-set", s)]
    base += ["--recipes", *args.recipes] if getattr(args, "recipes", None) else []
    sizes = getattr(args, "student_sizes", None)
    base += ["--student-sizes", *sizes] if sizes else []
    todo, running, failed = list(pending), {}, []
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a time limit: stop the children
    try:
        while todo or running:
            blocked = {job_name(x) for x in todo} | set(running) | set(failed)
            for r in list(todo):
                if len(running) >= args.jobs:
                    break
                if any(d in blocked for d in needs(r, pending)):
                    continue
                todo.remove(r)
                name = job_name(r)
                safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
                row_file = Path(tempfile.mkstemp(prefix=f"{safe}-", suffix=".json")[1])
                log_file = Path(args.runs) / f"{safe}.log"
                cmd = [*base, "--one", name, "--row-out", str(row_file), "--command", args.command]
                with log_file.open("ab") as log_f:
                    proc = subprocess.Popen(
                        cmd, stdout=log_f, stderr=subprocess.STDOUT, env=child_env()
                    )
                running[name] = (proc, row_file, log_file)
                logging.info("started %s (log %s)", name, log_file)
            if not running:  # everything left waits on a failed run
                break
            time.sleep(2)
            for name, (proc, row_file, log_file) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.returncode == 0 and row_file.stat().st_size:
                    for row in json.loads(row_file.read_text()):
                        on_row(row)
                    logging.info("finished %s", name)
                else:
                    failed.append(name)
                    logging.error("%s failed (exit %s); see %s", name, proc.returncode, log_file)
                row_file.unlink(missing_ok=True)
    finally:
        for proc, _, _ in running.values():
            proc.terminate()
    if failed or todo:
        skipped = [job_name(x) for x in todo]
        raise SystemExit(f"runs failed: {failed}; not started (they need a failed run): {skipped}")
