"""Runs ``train`` or ``distill`` for the multi-process tests, alone or under torchrun,
and records what each process did (not a test module: ``python ddp_driver.py JOBS``).

JOBS is a JSON list of jobs run one after the other in the same processes, each an
object: ``mode`` (plain | distill | unlabelled), ``data``, ``teacher``, ``out``, ``set``
(config overrides), ``resume``; optionally ``kill_at`` (SIGKILL a process when it is
about to take the job's ``kill_at``-th step (0-based)) on torchrun's attempt
``kill_attempt`` (default 0; alone: always), ``kill_rank`` (which process; default 1),
``hang_at`` (process 1 sleeps an hour before that step instead),
and ``record`` (a folder: each process writes ``rank<N>.json`` there with the training
samples it loaded, its own per-step losses and learning rates, and the files it wrote).
A restarted torchrun attempt runs the jobs again: finished ones resume at their end.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from distill import ddp
from distill.config import load
from distill.data.torch_dataset import DetectionDataset, UnlabelledFrames
from distill.distillation import DistillConfig, distill
from distill.train import train
from distill.train_config import TrainConfig
from distill.trainee import Trainee

RANK = int(os.environ.get("RANK", "0"))
JOB: dict = {}
SEEN: dict[str, list] = {}
CALLS = [0]


def _record_loads() -> None:
    for cls, key in ((DetectionDataset, "images"), (UnlabelledFrames, "frames")):
        original = cls.sample

        def sample(self, i, _original=original, _key=key):
            if getattr(self, "augment", True):  # training samples, not evaluation's
                SEEN[_key].append(int(i))
            return _original(self, i)

        cls.sample = sample


def _record_steps() -> None:
    original = Trainee.step

    def step(self, *args, **kwargs):
        kill = JOB.get("kill_at")
        alone = os.environ.get("WORLD_SIZE", "1") == "1"
        attempt = ddp.restarted() == JOB.get("kill_attempt", 0)
        chosen = alone or (attempt and JOB.get("kill_rank", 1) == RANK)
        if kill is not None and CALLS[0] == kill and chosen:
            os.kill(os.getpid(), signal.SIGKILL)
        if JOB.get("hang_at") == CALLS[0] and RANK == 1:  # alive but silent
            time.sleep(3600)
        CALLS[0] += 1
        original(self, *args, **kwargs)
        SEEN["logs"].append(dict(self.logs))
        SEEN["lr"].append(self.lr)

    Trainee.step = step


def _record_writes(out: Path) -> None:
    """Note every file or folder this process creates or writes under ``out``."""

    def note(path) -> None:
        p = Path(os.fsdecode(path)).absolute()
        if p == out or out in p.parents:
            SEEN["writes"].append(str(p))

    open_ = OPEN

    def open_w(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            note(file)
        return open_(file, mode, *args, **kwargs)

    builtins.open = io.open = open_w
    save, replace, mkdir = SAVE, REPLACE, MKDIR

    def save_w(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            note(f)
        return save(obj, f, *args, **kwargs)

    def replace_w(src, dst, *args, **kwargs):
        note(dst)
        return replace(src, dst, *args, **kwargs)

    def mkdir_w(self, *args, **kwargs):
        note(self)
        return mkdir(self, *args, **kwargs)

    torch.save, os.replace, Path.mkdir = save_w, replace_w, mkdir_w


def run(job: dict) -> None:
    JOB.clear()
    JOB.update(job)
    SEEN.update({"images": [], "frames": [], "logs": [], "lr": [], "writes": []})
    CALLS[0] = 0
    out = Path(JOB["out"]).absolute()
    record = JOB.get("record")
    if record:
        _record_writes(out)
    mode = JOB["mode"]
    if mode == "plain":
        cfg = load(TrainConfig, None, JOB["set"])
        train(cfg, JOB["data"], out, resume=bool(JOB.get("resume")), progress=False)
    else:
        cfg = load(DistillConfig, None, JOB["set"])
        frames = str(Path(JOB["data"]) / "unlabelled") if mode == "unlabelled" else None
        distill(
            cfg,
            JOB["teacher"],
            JOB["data"],
            str(out),
            unlabelled=frames,
            resume=bool(JOB.get("resume")),
            progress=False,
        )
    if record:
        builtins.open = io.open = OPEN
        torch.save, os.replace, Path.mkdir = SAVE, REPLACE, MKDIR
        Path(record).mkdir(parents=True, exist_ok=True)
        (Path(record) / f"rank{RANK}.json").write_text(json.dumps(SEEN))


OPEN, SAVE, REPLACE, MKDIR = builtins.open, torch.save, os.replace, Path.mkdir

if __name__ == "__main__":
    _record_loads()
    _record_steps()
    cleanup, ddp.cleanup = ddp.cleanup, ddp.barrier  # one process group for all the jobs
    for job in json.loads(sys.argv[1]):
        run(job)
    cleanup()
