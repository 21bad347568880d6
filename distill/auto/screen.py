"""Stage 1 of ``understudy auto``: the latency screen (no training).

Each candidate is built with random weights (BatchNorm statistics from a few forward
passes on random images, class bias at the detection prior), exported to ONNX through a
checkpoint and :func:`distill.export.export_onnx`, and measured end to end through
:class:`runtime.pipeline.Detector` (pre-processing of camera-sized frames, inference,
post-processing), the same path as ``understudy detect`` and ``benchmarks/latency.py``.

The measuring step is a plain callable ``measure(candidate) -> LatencyResult`` so that
tests (and other targets) can substitute it; :func:`run_screen` stores one JSON file per
candidate and reuses it on a re-run with the same settings.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.auto.grid import Candidate, GridConfig
from distill.auto.store import read_json, write_json
from runtime.budget import Budget
from runtime.errors import ConfigError

Measure = Callable[[Candidate], "LatencyResult"]
Cost = Callable[[Candidate], tuple[int, int]]


@dataclass(frozen=True)
class LatencyResult:
    """End-to-end latency of one model on one backend: per call of the pipeline at
    ``batch`` frames (pre + infer + post), in milliseconds; stage values are medians."""

    backend: str
    batch: int
    p50_ms: float
    p99_ms: float
    mean_ms: float = 0.0
    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    postprocess_ms: float = 0.0
    runs: int = 0
    warmup: int = 0
    precision: str = "fp32"
    detections_per_frame: float = 0.0  # median; random weights should give about none
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyResult:
        """From :meth:`to_dict` output; unknown keys (another version) are ignored, a
        missing required one raises TypeError."""
        from dataclasses import fields

        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class ScreenRow:
    """A measured candidate. ``meets``/``on_frontier`` are filled against a budget."""

    candidate: Candidate
    flops: int  # 2 x MACs at batch 1, the candidate's input size
    params: int
    latency: LatencyResult
    preset: str | None = None  # the preset with this architecture, if any
    reused: bool = False  # read back from an earlier run
    meets: bool = False
    failures: tuple[str, ...] = ()  # the budget lines it misses
    on_frontier: bool = False

    def to_dict(self) -> dict[str, Any]:
        lat = self.latency
        return {
            **self.candidate.to_dict(),
            "preset": self.preset,
            "gflops": round(self.flops / 1e9, 4),
            "params_m": round(self.params / 1e6, 4),
            "p50_ms": round(lat.p50_ms, 3),
            "p99_ms": round(lat.p99_ms, 3),
            "preprocess_ms": round(lat.preprocess_ms, 3),
            "infer_ms": round(lat.infer_ms, 3),
            "postprocess_ms": round(lat.postprocess_ms, 3),
            "detections_per_frame": lat.detections_per_frame,
            "meets_budget": self.meets,
            "misses": list(self.failures),
            "on_frontier": self.on_frontier,
            "reused": self.reused,
            "seconds": lat.seconds,
        }


# -- measuring a model file ------------------------------------------------------------
def camera_frames(width: int, height: int, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``n`` drawn camera frames (height, width, 3) BGR uint8 (shapes on gradients)."""
    from distill.export import synthetic_images

    return synthetic_images(n, seed=seed, size=(height, width))


def measure_model(
    path: str | Path,
    *,
    backend: str,
    batch: int = 1,
    warmup: int = 10,
    runs: int = 100,
    threads: int | None = None,
    frames: Sequence[np.ndarray] | None = None,
) -> LatencyResult:
    """Time ``warmup + runs`` calls of :class:`runtime.pipeline.Detector` on ``path``
    (``detect`` for batch 1, ``detect_batch`` otherwise) over camera frames (default
    640x480); percentiles of the per-call wall time, medians of each stage (summed over
    the batch)."""
    from runtime.pipeline import Detector

    frames = list(frames) if frames is not None else camera_frames(640, 480)
    t_open = time.perf_counter()
    with Detector(path, backend=backend, threads=threads, max_batch=batch) as det:
        if det.max_batch < batch:
            raise ConfigError(f"{path}: the model takes batches of at most {det.max_batch}")
        opened = time.perf_counter() - t_open
        wall, pre, infer, post, ndet = [], [], [], [], []
        t_runs = time.perf_counter()
        for i in range(warmup + runs):
            images = [frames[(i * batch + j) % len(frames)] for j in range(batch)]
            t0 = time.perf_counter()
            results = [det.detect(images[0])] if batch == 1 else det.detect_batch(images)
            dt = (time.perf_counter() - t0) * 1e3
            if i < warmup:
                continue
            wall.append(dt)
            pre.append(sum(t.preprocess_ms for _, t in results))
            infer.append(sum(t.infer_ms for _, t in results))
            post.append(sum(t.postprocess_ms for _, t in results))
            ndet.extend(len(d) for d, _ in results)
        name, precision = det.backend_name, det.precision
    return LatencyResult(
        backend=name,
        batch=batch,
        precision=precision,
        p50_ms=float(np.percentile(wall, 50)),
        p99_ms=float(np.percentile(wall, 99)),
        mean_ms=float(np.mean(wall)),
        preprocess_ms=statistics.median(pre),
        infer_ms=statistics.median(infer),
        postprocess_ms=statistics.median(post),
        runs=runs,
        warmup=warmup,
        detections_per_frame=float(statistics.median(ndet)),
        seconds={"open": round(opened, 3), "runs": round(time.perf_counter() - t_runs, 3)},
    )


# -- building candidates ---------------------------------------------------------------
@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run small torch work (building, BN calibration, tracing, FLOP counting) on ``n``
    threads: on a busy CPU, multi-threaded tiny ops spend far longer waiting for each
    other than computing (seconds instead of milliseconds)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_candidate(candidate: Candidate, num_classes: int, calibration_batches: int = 4):
    """The candidate's Detector with random weights: BatchNorm running statistics from
    ``calibration_batches`` forward passes (cumulative average) on uniform random images
    at the candidate's input, class bias at the detection prior. Returned in eval mode."""
    import torch

    from distill.models.presets import build_detector

    torch.manual_seed(0)
    model = build_detector(candidate.scale, num_classes)
    model.head.reset_bias(candidate.input)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if calibration_batches > 0:
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the passes
        g = torch.Generator().manual_seed(0)
        model.train()
        with torch.no_grad():
            for _ in range(calibration_batches):
                model(torch.rand(2, 3, candidate.input, candidate.input, generator=g))
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    return model.eval()


def candidate_cost(candidate: Candidate, num_classes: int) -> tuple[int, int]:
    """(FLOPs = 2 x MACs at batch 1 and the candidate's input, parameters)."""
    from distill.models.flops import count_flops, count_params
    from distill.models.presets import build_detector

    with torch_threads(1):
        model = build_detector(candidate.scale, num_classes)
        return count_flops(model, candidate.input), count_params(model)


class OnnxCandidateMeasure:
    """``measure(candidate)``: build with random weights, export to ONNX, time it on
    ``backend`` (``onnxruntime`` on this CPU, or ``tensorrt`` which compiles the ONNX
    file into a cached engine). Files go under ``work_dir/<name>/`` and are deleted after
    the measurement unless ``keep_files``."""

    def __init__(
        self,
        work_dir: str | Path,
        class_names: Sequence[str],
        *,
        backend: str,
        grid: GridConfig,
        batch: int = 1,
        threads: int | None = None,
        keep_files: bool = False,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.class_names = tuple(class_names)
        self.backend, self.grid, self.batch = backend, grid, batch
        self.threads, self.keep_files = threads, keep_files
        self.frames = camera_frames(grid.frame_width, grid.frame_height)

    def __call__(self, candidate: Candidate) -> LatencyResult:
        from distill.auto.grid import matching_preset
        from distill.checkpoint import make_checkpoint, save_atomic
        from distill.export import export_onnx

        folder = self.work_dir / candidate.name
        t0 = time.perf_counter()
        with torch_threads(1):
            model = build_candidate(candidate, len(self.class_names), self.grid.calibration_batches)
            ckpt = make_checkpoint(
                model,
                preset=matching_preset(candidate) or candidate.model_name,
                scale=candidate.scale,
                class_names=self.class_names,
                img_size=candidate.input,
                config={"auto": "random weights for the latency screen"},
            )
            ckpt_path = save_atomic(ckpt, folder / "random.pt")
            t1 = time.perf_counter()
            onnx_path = folder / "random.onnx"
            export_onnx(
                ckpt_path,
                onnx_path,
                img_size=candidate.input,
                dynamic_batch=self.batch > 1,
                validate=False,
            )
        t2 = time.perf_counter()
        result = measure_model(
            onnx_path,
            backend=self.backend,
            batch=self.batch,
            warmup=self.grid.warmup,
            runs=self.grid.runs,
            threads=self.threads,
            frames=self.frames,
        )
        if not self.keep_files:
            shutil.rmtree(folder, ignore_errors=True)
        seconds = {"build": round(t1 - t0, 3), "export": round(t2 - t1, 3), **result.seconds}
        return LatencyResult(**{**result.to_dict(), "seconds": seconds})


# -- the screen ------------------------------------------------------------------------
def latency_failures(lat: LatencyResult, budget: Budget) -> tuple[str, ...]:
    """The budget's latency lines that ``lat`` misses, e.g. ``("p99 41.2 ms > 33 ms",)``."""
    out = []
    if budget.latency.p50_ms is not None and lat.p50_ms > budget.latency.p50_ms:
        out.append(f"p50 {lat.p50_ms:.2f} ms > {budget.latency.p50_ms:g} ms")
    if budget.latency.p99_ms is not None and lat.p99_ms > budget.latency.p99_ms:
        out.append(f"p99 {lat.p99_ms:.2f} ms > {budget.latency.p99_ms:g} ms")
    return tuple(out)


def frontier_metric(budget: Budget) -> str:
    """The latency the frontier is drawn on: p99 when the budget has a p99 line."""
    return "p99_ms" if budget.latency.p99_ms is not None else "p50_ms"


def pareto_frontier(rows: Sequence[ScreenRow], metric: str = "p50_ms") -> set[str]:
    """Names of the candidates that no other candidate beats on both axes: nothing is
    at most as slow (``metric``) with at least as many FLOPs, better in one of them."""
    order = sorted(rows, key=lambda r: (getattr(r.latency, metric), -r.flops))
    best, names = -1, set()
    for r in order:
        if r.flops > best:
            names.add(r.candidate.name)
            best = r.flops
    return names


def apply_budget(rows: Sequence[ScreenRow], budget: Budget) -> list[ScreenRow]:
    """Mark each row's budget verdict and frontier membership (same order)."""
    from dataclasses import replace

    front = pareto_frontier(rows, frontier_metric(budget))
    out = []
    for r in rows:
        failures = latency_failures(r.latency, budget)
        out.append(
            replace(r, meets=not failures, failures=failures, on_frontier=r.candidate.name in front)
        )
    return out


def select(rows: Sequence[ScreenRow], top_k: int = 1) -> list[ScreenRow]:
    """The ``top_k`` budget-meeting candidates with the most FLOPs (ties: faster first)."""
    ok = [r for r in rows if r.meets]
    ok.sort(key=lambda r: (-r.flops, r.latency.p50_ms, r.candidate.name))
    return ok[:top_k]


def fastest(rows: Sequence[ScreenRow], metric: str = "p50_ms") -> ScreenRow:
    return min(rows, key=lambda r: (getattr(r.latency, metric), r.candidate.name))


def run_screen(
    candidates: Sequence[Candidate],
    measure: Measure,
    cost: Cost,
    store_dir: str | Path,
    settings: dict[str, Any],
    *,
    preset_of: Callable[[Candidate], str | None] = lambda c: None,
    progress: bool = True,
) -> list[ScreenRow]:
    """Measure every candidate (or read it back from ``store_dir/<name>.json`` when it
    was measured with the same ``settings``: backend, batch, runs, machine, ...)."""
    from tqdm import tqdm

    store_dir = Path(store_dir)
    rows = []
    bar = tqdm(candidates, desc="latency screen", disable=not progress, dynamic_ncols=True)
    for c in bar:
        bar.set_postfix_str(c.name)
        path = store_dir / f"{c.name}.json"
        stored = read_json(path)
        if stored is not None and stored.get("settings") == settings:
            try:
                lat = LatencyResult.from_dict(stored["latency"])
                rows.append(
                    ScreenRow(
                        c,
                        int(stored["flops"]),
                        int(stored["params"]),
                        lat,
                        stored.get("preset"),
                        reused=True,
                    )
                )
                continue
            except (KeyError, TypeError, ValueError):
                pass  # written by another version: measure again
        lat = measure(c)
        flops, params = cost(c)
        preset = preset_of(c)
        record = {
            "candidate": c.to_dict(),
            "settings": settings,
            "flops": flops,
            "params": params,
            "preset": preset,
            "latency": lat.to_dict(),
        }
        write_json(path, record)
        rows.append(ScreenRow(c, flops, params, lat, preset))
    return rows
