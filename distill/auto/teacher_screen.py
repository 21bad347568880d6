"""Stage 2 of ``understudy auto``: which teacher teaches the chosen student best.

A larger teacher is not always a better teacher (the capacity gap between teacher and
student; Mirzadeh et al., "Improved Knowledge Distillation via Teacher Assistant", 2020).
So each teacher gets the same short proxy run -- the chosen student distilled for a few
epochs on the same subset of the labelled images, same seed -- and the teachers are
ranked by that proxy student's mAP50-95 on the validation split.

The proxy is a plain callable ``proxy(teacher) -> ProxyResult`` so tests can substitute
it; :func:`screen_teachers` stores one JSON file per teacher and reuses it on a re-run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.auto.grid import Candidate
from distill.auto.store import read_json, write_json


@dataclass(frozen=True)
class ProxyResult:
    """What one proxy run scored (mAP in points, 0-100)."""

    map50_95: float
    map50: float | None = None
    method: str = ""
    checkpoint: str = ""


@dataclass(frozen=True)
class TeacherScore:
    """A teacher's proxy score and cost (``wall_s``: seconds of its proxy run)."""

    teacher: str
    map50_95: float
    map50: float | None
    wall_s: float
    method: str = ""
    checkpoint: str = ""
    rank: int = 0
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Proxy = Callable[[str], ProxyResult]


def teacher_key(path: str | Path) -> str:
    """A stable folder/file name for a teacher file: its stem plus a hash of its
    absolute path, size and modification time (a retrained teacher is re-screened)."""
    p = Path(path).resolve()
    try:
        st = p.stat()
        ident = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        ident = str(p)
    return f"{p.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:8]}"


def rank(scores: Sequence[TeacherScore]) -> list[TeacherScore]:
    """Best proxy mAP50-95 first; ties keep the order the teachers were given in."""
    from dataclasses import replace

    order = sorted(range(len(scores)), key=lambda i: (-scores[i].map50_95, i))
    return [replace(scores[i], rank=k + 1) for k, i in enumerate(order)]


def screen_teachers(
    teachers: Sequence[str],
    proxy: Proxy,
    store_dir: str | Path,
    settings: dict[str, Any],
    *,
    progress: bool = True,
) -> list[TeacherScore]:
    """Run (or read back) each teacher's proxy and return them ranked. A teacher's result
    is reused when ``store_dir/<teacher_key>.json`` was made with the same ``settings``
    (student, epochs, fraction, config)."""
    from tqdm import tqdm

    store_dir = Path(store_dir)
    scores = []
    for t in tqdm(teachers, desc="teacher screen", disable=not progress, dynamic_ncols=True):
        path = store_dir / f"{teacher_key(t)}.json"
        stored = read_json(path)
        if stored is not None and stored.get("settings") == settings:
            r = stored["result"]
            scores.append(
                TeacherScore(
                    str(t),
                    float(r["map50_95"]),
                    r.get("map50"),
                    float(r["wall_s"]),
                    r.get("method", ""),
                    r.get("checkpoint", ""),
                    reused=True,
                )
            )
            continue
        t0 = time.perf_counter()
        result = proxy(str(t))
        wall = round(time.perf_counter() - t0, 2)
        score = TeacherScore(
            str(t), float(result.map50_95), result.map50, wall, result.method, result.checkpoint
        )
        write_json(path, {"teacher": str(t), "settings": settings, "result": score.to_dict()})
        scores.append(score)
    return rank(scores)


class DistillProxy:
    """``proxy(teacher)``: distil ``candidate`` from ``teacher`` for ``epochs`` epochs on
    ``fraction`` of the labelled images (same subset and seed for every teacher), then
    read the proxy student's mAP50-95 on the validation split. Runs live in
    ``work_dir/<teacher_key>/`` and resume there if interrupted."""

    def __init__(
        self,
        candidate: Candidate,
        cfg,
        data: str | Path,
        work_dir: str | Path,
        *,
        epochs: int,
        fraction: float,
        unlabelled: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        self.candidate, self.cfg, self.data = candidate, cfg, data
        self.work_dir = Path(work_dir)
        self.epochs, self.fraction = epochs, fraction
        self.unlabelled, self.progress = unlabelled, progress

    def settings(self) -> dict[str, Any]:
        """What makes two proxy runs comparable (and a stored one reusable)."""
        from distill.config import to_dict

        return {
            "student": self.candidate.name,
            "epochs": self.epochs,
            "fraction": self.fraction,
            "config": to_dict(self.cfg),
            "data": str(self.data),
            "unlabelled": str(self.unlabelled or ""),
        }

    def __call__(self, teacher: str) -> ProxyResult:
        from distill.auto.student import distill_candidate
        from distill.checkpoint import read_checkpoint

        overrides = {
            "epochs": self.epochs,
            "labelled_fraction": self.fraction,
            "eval_every": 0,
            "close_mosaic": min(self.cfg.close_mosaic, max(0, self.epochs - 1)),
            "warmup_epochs": min(self.cfg.warmup_epochs, self.epochs / 2),
        }
        path, method = distill_candidate(
            self.candidate,
            self.cfg,
            teacher,
            self.data,
            self.work_dir / teacher_key(teacher),
            unlabelled=self.unlabelled,
            overrides=overrides,
            progress=self.progress,
        )
        metrics = read_checkpoint(path).get("metrics", {})
        return ProxyResult(
            float(metrics.get("map50_95", 0.0)), metrics.get("map50"), method, str(path)
        )
