"""Stage 3 of ``understudy auto``: distil the chosen student, export it, measure it the
way the screen measured the candidates, evaluate it, and measure the teacher for the gate.

Every step stores its result under the run's folder and is skipped on a re-run: training
resumes from ``last.pt``, the export is redone only when the checkpoint is newer, the
latency and mAP are read back from JSON when made from the same file and settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.auto.grid import Candidate, GridConfig
from distill.auto.report import FinalResult, TeacherReference
from distill.auto.screen import LatencyResult, measure_model
from distill.auto.store import read_json, write_json
from distill.auto.teacher_screen import teacher_key
from runtime.errors import UnderstudyError

log = logging.getLogger(__name__)


def cached(path: Path, key: dict[str, Any], compute: Callable[[], dict]) -> tuple[dict, float]:
    """(value, seconds): the value stored at ``path`` for the same ``key`` with the
    seconds its computation took then, else ``compute()`` (timed) stored there."""
    stored = read_json(path)
    if stored is not None and stored.get("key") == key and isinstance(stored.get("value"), dict):
        return stored["value"], float(stored.get("seconds", 0.0))
    t0 = time.perf_counter()
    value = compute()
    seconds = round(time.perf_counter() - t0, 2)
    write_json(path, {"key": key, "value": value, "seconds": seconds})
    return value, seconds


def export_once(ckpt: Path, onnx: Path, store: Path, **kwargs: Any) -> float:
    """Export ``ckpt`` to ``onnx`` unless an export of the same checkpoint with the same
    arguments is on disk; returns the seconds the export took (then)."""

    key = {**_file_key(ckpt), "onnx": str(onnx), **kwargs}
    stored = read_json(store)
    if stored is not None and stored.get("key") == key and onnx.is_file():
        return float(stored.get("seconds", 0.0))
    onnx.unlink(missing_ok=True)  # a stale export must not satisfy the key of a new one
    _, seconds = cached(store, key, lambda: _export(ckpt, onnx, kwargs))
    return seconds


def _export(ckpt: Path, onnx: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    from distill.export import export_onnx

    report = export_onnx(ckpt, onnx, **kwargs)
    if report.parity is not None and not report.parity.passed:
        log.warning("%s: %s", onnx, report.parity.summary())
    return {"parity": report.parity.summary() if report.parity else None}


def _file_key(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class Measurer:
    """Latency of an exported model with the screen's settings (backend, batch, frames,
    warm-up, runs, threads)."""

    def __init__(self, backend: str, batch: int, grid: GridConfig, threads: int | None) -> None:
        from distill.auto.screen import camera_frames

        self.backend, self.batch, self.grid, self.threads = backend, batch, grid, threads
        self.frames = camera_frames(grid.frame_width, grid.frame_height)

    def __call__(self, path: Path, store: Path) -> tuple[LatencyResult, float]:
        key = {
            **_file_key(path),
            "backend": self.backend,
            "batch": self.batch,
            "runs": self.grid.runs,
            "warmup": self.grid.warmup,
            "threads": self.threads,
            "frame": [self.grid.frame_width, self.grid.frame_height],
        }
        value, seconds = cached(
            store,
            key,
            lambda: measure_model(
                path,
                backend=self.backend,
                batch=self.batch,
                warmup=self.grid.warmup,
                runs=self.grid.runs,
                threads=self.threads,
                frames=self.frames,
            ).to_dict(),
        )
        return LatencyResult.from_dict(value), seconds


def _evaluate(path: Path, split, store: Path, progress: bool) -> tuple[dict, float]:
    from distill.evaluate import evaluate_path

    first = str(split.records[0].path) if split.records else ""
    key = {**_file_key(path), "split_first_image": first, "split_images": len(split.records)}
    return cached(store, key, lambda: evaluate_path(path, split, progress=progress).to_dict())


class FinalStage:
    """``finalize(candidate, teacher) -> FinalResult`` (the gate is applied by the caller)."""

    def __init__(
        self,
        cfg,
        data: str,
        split,
        work_dir: str | Path,
        measurer: Measurer,
        *,
        unlabelled: str | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.data, self.split = cfg, data, split
        self.work_dir = Path(work_dir)
        self.measurer, self.unlabelled, self.progress = measurer, unlabelled, progress

    def __call__(self, candidate: Candidate, teacher: str) -> FinalResult:
        from distill.auto.student import distill_candidate
        from distill.checkpoint import read_checkpoint

        folder = self.work_dir / f"{candidate.name}-{teacher_key(teacher)}"
        t0 = time.perf_counter()
        ckpt, method = distill_candidate(
            candidate,
            self.cfg,
            teacher,
            self.data,
            folder / "train",
            unlabelled=self.unlabelled,
            progress=self.progress,
        )
        t_distill = time.perf_counter() - t0
        metrics = read_checkpoint(ckpt).get("metrics", {})
        onnx = folder / "student.onnx"
        t_export = export_once(
            ckpt,
            onnx,
            folder / "export.json",
            img_size=candidate.input,
            dynamic_batch=self.measurer.batch > 1,
        )
        latency, t_measure = self.measurer(onnx, folder / "latency.json")
        ev, t_eval = _evaluate(onnx, self.split, folder / "eval.json", self.progress)
        seconds = {
            "distill (training, as recorded)": metrics.get("train_seconds"),
            "distill (this run, incl. data loading)": round(t_distill, 1),
            "export + parity check": t_export,
            "measure": t_measure,
            "evaluate": t_eval,
        }
        return FinalResult(
            candidate.name,
            str(teacher),
            method,
            str(ckpt),
            str(onnx),
            latency,
            ev.get("map50_95"),
            ev.get("map50"),
            metrics.get("map50_95"),
            seconds,
        )


class TeacherReferenceStage:
    """``reference(teacher) -> TeacherReference``: the teacher exported to ONNX at its own
    input size (a .pt) or used as is (an Understudy .onnx), measured like the students,
    and evaluated through the runtime on the validation split."""

    def __init__(self, split, work_dir: str | Path, measurer: Measurer, progress: bool = True):
        self.split, self.work_dir = split, Path(work_dir)
        self.measurer, self.progress = measurer, progress

    def __call__(self, teacher: str) -> TeacherReference:
        ref = TeacherReference(str(teacher))
        folder = self.work_dir / teacher_key(teacher)
        path: Path | None = Path(teacher)
        if path.suffix.lower() == ".pt":
            onnx = folder / "teacher.onnx"
            try:  # at the teacher's own input size: how it would run on the vehicle
                ref.seconds["export"] = export_once(
                    path,
                    onnx,
                    folder / "export.json",
                    dynamic_batch=self.measurer.batch > 1,
                    validate=False,
                )
                path = onnx
            except UnderstudyError as e:
                ref.notes.append(f"teacher not exported, latency not measured: {e}")
                path = None
        if path is not None:
            try:
                ref.latency, ref.seconds["measure"] = self.measurer(path, folder / "latency.json")
            except UnderstudyError as e:
                ref.notes.append(f"teacher latency not measured: {e}")
        try:
            target = path or Path(teacher)
            ev, ref.seconds["evaluate"] = _evaluate(
                target, self.split, folder / "eval.json", self.progress
            )
            ref.map50_95 = ev.get("map50_95")
        except UnderstudyError as e:
            ref.notes.append(f"teacher not evaluated: {e}")
        return ref
