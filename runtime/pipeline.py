"""The frame pipeline: the only place where pre-processing, inference and post-processing meet.

    with Detector("student.onnx") as det:
        detections, timings = det.detect(frame)          # frame: (H, W, 3) BGR uint8
        for detections, timings in det.stream(frames):   # decode+preprocess overlapped
            ...

A Detector is not thread-safe: use one per thread (or a lock around it).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.backends import Backend, open_backend
from runtime.errors import ConfigError, InputError
from runtime.model_spec import ModelSpec
from runtime.postprocess import Postprocessor
from runtime.preprocess import Letterbox, Preprocessor
from runtime.types import Detections, StageTimings

PIPELINE_MAX_BATCH = 8  # frames per detect_batch call (preallocated input slots) unless given
_END = object()


@dataclass
class _Prepared:
    slot: int
    letterbox: Letterbox
    decode_ms: float
    preprocess_ms: float
    started: float  # perf_counter at preprocessing start
    ready: float  # perf_counter at preprocessing end


@dataclass
class _Failed:
    error: BaseException


def _ms(t0: float, t1: float) -> float:
    return (t1 - t0) * 1e3


class Detector:
    """Frames in, :class:`Detections` (xyxy original-image pixels) out.

    Args:
        model: a model path (.onnx, .engine/.plan, .pt; opened and owned, closed by
            :meth:`close`) or an opened :class:`Backend` (left open by :meth:`close`).
        backend: force a backend for a path ("onnxruntime", "tensorrt", "torch").
        threads: intra-op threads of the backend (None: its default).
        score_threshold, iou_threshold, max_detections: post-processing.
        max_batch: largest batch per backend call (default: the backend's, at most 8).
        device: "cpu" or "cuda" for the backends that take one.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Backend,
        *,
        backend: str | None = None,
        threads: int | None = None,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
        max_batch: int | None = None,
        device: str = "cpu",
    ):
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if isinstance(model, (str, os.PathLike)):
            self._backend: Backend = open_backend(
                model, backend=backend, device=device, threads=threads, max_batch=max_batch
            )
            self._owns_backend = True
        else:
            if backend is not None:
                raise ConfigError("backend= applies to a model path, not to an opened backend")
            self._backend = model
            self._owns_backend = False
        try:
            self._setup(max_batch, score_threshold, iou_threshold, max_detections)
        except BaseException:
            self.close()
            raise

    def _setup(
        self, max_batch: int | None, score_threshold: float, iou_threshold: float, max_det: int
    ) -> None:
        cap = max_batch or PIPELINE_MAX_BATCH
        self._max_batch = max(1, min(self._backend.max_batch, cap))
        spec = self._backend.spec
        # Slots 0..max_batch-1 for detect/detect_batch; two more of its own for stream(),
        # which fills one while the backend reads the other.
        self._pre = Preprocessor(spec, self._backend.input_dtype, slots=self._max_batch + 2)
        self._stream_slots = (self._max_batch, self._max_batch + 1)
        self._post = Postprocessor(
            spec,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_det,
        )

    # -- properties -----------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return self._backend.spec

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def precision(self) -> str:
        return self._backend.precision

    @property
    def max_batch(self) -> int:
        return self._max_batch

    # -- single frames and batches ---------------------------------------------------
    def detect(
        self, image: np.ndarray, *, pixel_format: str = "BGR"
    ) -> tuple[Detections, StageTimings]:
        """image: (H, W, 3) uint8 in ``pixel_format`` (or (H, W) / (H, W, 1) gray, or
        (H, W, 4) with alpha). Returns detections and per-stage milliseconds."""
        t0 = time.perf_counter()
        lb = self._pre(image, 0, pixel_format)
        t1 = time.perf_counter()
        outputs = self._backend.infer(self._pre.batch(1))
        t2 = time.perf_counter()
        dets = self._post(outputs, [lb])[0]
        t3 = time.perf_counter()
        return dets, StageTimings(
            preprocess_ms=_ms(t0, t1),
            infer_ms=_ms(t1, t2),
            postprocess_ms=_ms(t2, t3),
            total_ms=_ms(t0, t3),
        )

    def detect_batch(
        self, images: Sequence[np.ndarray], *, pixel_format: str = "BGR"
    ) -> list[tuple[Detections, StageTimings]]:
        """One backend call per ``max_batch`` images; results in input order.

        Timings per image: its own preprocessing; ``infer_ms`` and ``postprocess_ms`` are
        its share (batch time / batch size), so sums over images give wall time;
        ``extra`` holds ``batch_size`` and ``batch_infer_ms``.
        """
        results: list[tuple[Detections, StageTimings]] = []
        for start in range(0, len(images), self._max_batch):
            chunk = images[start : start + self._max_batch]
            n = len(chunk)
            lbs, pre_ms = [], []
            for i, image in enumerate(chunk):
                t0 = time.perf_counter()
                try:
                    lbs.append(self._pre(image, i, pixel_format))
                except InputError as e:
                    raise InputError(f"images[{start + i}]: {e}") from e
                pre_ms.append(_ms(t0, time.perf_counter()))
            t1 = time.perf_counter()
            outputs = self._backend.infer(self._pre.batch(n))
            t2 = time.perf_counter()
            dets = self._post(outputs, lbs)
            t3 = time.perf_counter()
            infer_share, post_share = _ms(t1, t2) / n, _ms(t2, t3) / n
            for d, p in zip(dets, pre_ms):
                extra = {"batch_size": float(n), "batch_infer_ms": _ms(t1, t2)}
                timing = StageTimings(
                    preprocess_ms=p,
                    infer_ms=infer_share,
                    postprocess_ms=post_share,
                    total_ms=p + infer_share + post_share,
                    extra=extra,
                )
                results.append((d, timing))
        return results

    def warmup(self, n: int = 3) -> None:
        """Run ``n`` frames of plain grey through the whole pipeline (first runs are slow)."""
        h, w = self.spec.input_size
        frame = np.full((h, w, 3), 114, np.uint8)
        for _ in range(n):
            self.detect(frame)

    # -- streams ---------------------------------------------------------------------
    def stream(
        self, frames: Iterable[np.ndarray], pipelined: bool = True, *, pixel_format: str = "BGR"
    ) -> Iterator[tuple[Detections, StageTimings]]:
        """Detections for each frame of ``frames``, in order.

        Pipelined: a worker thread pulls (decodes) and pre-processes frame i+1 into the
        second buffer slot while the backend runs frame i. Timings: ``decode_ms`` is the
        time to pull the frame from ``frames``, ``queue_ms`` the wait between the end of
        pre-processing and the start of inference, ``total_ms`` from the start of
        pre-processing to the end of post-processing. An error for frame k (e.g. an
        InputError) is raised after the results of frames < k.
        """
        if not pipelined:
            it = iter(frames)
            for index in itertools.count():
                t0 = time.perf_counter()
                frame = next(it, _END)
                if frame is _END:
                    return
                decode_ms = _ms(t0, time.perf_counter())
                try:
                    dets, t = self.detect(frame, pixel_format=pixel_format)
                except InputError as e:
                    raise InputError(f"frame {index}: {e}") from e
                yield (
                    dets,
                    StageTimings(
                        decode_ms=decode_ms,
                        preprocess_ms=t.preprocess_ms,
                        infer_ms=t.infer_ms,
                        postprocess_ms=t.postprocess_ms,
                        total_ms=t.total_ms,
                    ),
                )
            return

        free: queue.Queue[int] = queue.Queue()
        for slot in self._stream_slots:
            free.put(slot)
        ready: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        worker = threading.Thread(
            target=self._produce,
            args=(frames, free, ready, stop, pixel_format),
            name="understudy-preprocess",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                t0 = time.perf_counter()
                outputs = self._backend.infer(self._pre.buffer[item.slot : item.slot + 1])
                t1 = time.perf_counter()
                free.put(item.slot)  # the backend is done reading this slot
                dets = self._post(outputs, [item.letterbox])[0]
                t2 = time.perf_counter()
                yield (
                    dets,
                    StageTimings(
                        queue_ms=_ms(item.ready, t0),
                        decode_ms=item.decode_ms,
                        preprocess_ms=item.preprocess_ms,
                        infer_ms=_ms(t0, t1),
                        postprocess_ms=_ms(t1, t2),
                        total_ms=_ms(item.started, t2),
                    ),
                )
        finally:
            stop.set()
            free.put(self._stream_slots[0])  # wake a worker waiting for a slot
            worker.join(timeout=5.0)

    def _produce(
        self,
        frames: Iterable[np.ndarray],
        free: queue.Queue[int],
        ready: queue.Queue[Any],
        stop: threading.Event,
        pixel_format: str,
    ) -> None:
        try:
            it = iter(frames)
            index = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                frame = next(it, _END)
                if frame is _END:
                    break
                decode_ms = _ms(t0, time.perf_counter())
                slot = free.get()
                if stop.is_set():
                    break
                t1 = time.perf_counter()
                try:
                    lb = self._pre(frame, slot, pixel_format)
                except InputError as e:
                    raise InputError(f"frame {index}: {e}") from e
                t2 = time.perf_counter()
                ready.put(_Prepared(slot, lb, decode_ms, _ms(t1, t2), t1, t2))
                index += 1
        except BaseException as e:  # handed to the consumer, raised there in order
            ready.put(_Failed(e))
        finally:
            ready.put(_END)

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Close the backend if this Detector opened it."""
        if self._owns_backend and self._backend is not None:
            self._backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
