"""The compute-fair rule of the accuracy benchmark: a student may train as long as the
teacher trained, on the same machine.

A run's training time is read from its ``metrics.jsonl`` (one line per epoch: images and
images/s of its training steps; evaluations are not counted, for the teacher or the
student). On a shared machine some epochs run slower (another job, a paused process):
each run's time is taken at the throughput it had alone, the 75th percentile of its
epochs' images/s (a slowed epoch only lowers its throughput, never raises it).

- budget = the teacher's images over all its epochs / its throughput;
- a student's epoch = its reference run's images per epoch / that run's throughput (the
  reference is the same student trained with the benchmark's 16 epochs: same model,
  method and seed; a distilled student's steps include the teacher's forward passes);
- the student's epochs = the whole epochs that fit in the budget (at least 1).

Its learning-rate schedule and mosaic switch-off are set by its epochs as for any run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import DataError

QUANTILE = 0.75  # of the epochs' images/s: the throughput of the run alone


@dataclass(frozen=True)
class RunTime:
    """A finished run's training steps at the throughput it had alone."""

    epochs: int
    images_per_epoch: float
    images_per_s: float

    @property
    def epoch_seconds(self) -> float:
        return self.images_per_epoch / self.images_per_s

    @property
    def seconds(self) -> float:
        return self.epochs * self.epoch_seconds


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_time(run: Path, batch_size: int | None = None) -> RunTime:
    """:class:`RunTime` of the run in folder ``run`` from its ``metrics.jsonl``. Logs
    written before epochs recorded ``images`` give it as steps x ``batch_size``."""
    log = run / "metrics.jsonl"
    if not log.is_file():
        raise DataError(f"{run}: no metrics.jsonl; train this run first")
    epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    seen: dict[int, dict] = {}
    for e in epochs:  # a resumed run may log an epoch again: the last line counts
        seen[e["epoch"]] = e
    if not seen:
        raise DataError(f"{log}: no epochs logged")
    images, previous_step = [], 0
    for n in sorted(seen):
        e = seen[n]
        if "images" in e:
            images.append(float(e["images"]))
        elif batch_size:
            images.append(float((e["step"] - previous_step) * batch_size))
        else:
            raise DataError(f"{log}: epoch {n} has no `images`; give the run's batch size")
        previous_step = e["step"]
    throughput = _quantile([float(seen[n]["images_per_s"]) for n in sorted(seen)], QUANTILE)
    if throughput <= 0:
        raise DataError(f"{log}: images_per_s is not positive")
    return RunTime(len(seen), sum(images) / len(images), throughput)


def fair_epochs(teacher: RunTime, reference: RunTime) -> int:
    """The whole epochs of the reference student that fit in the teacher's time (>= 1)."""
    return max(1, math.floor(teacher.seconds / reference.epoch_seconds))
