"""ModelStatistics from the server's Prometheus series (one source for both).

``<name>`` reads ``understudy_stage_duration_seconds{stage}`` (every frame the detector
answered, through ``understudy.v1`` or KServe alike): success = stage ``total`` (arrival
to answer), queue = ``queue``, compute_input = ``decode`` + ``preprocess`` (count of
``preprocess``), compute_infer = ``infer``, compute_output = ``postprocess``; fail counts
``understudy_frame_errors_total`` (all codes, both protocols). ``<name>_raw`` reads
``understudy_raw_stage_duration_seconds{stage}`` (queue, infer, total; no input or output
stage: their durations stay 0). Counts are requests (frames); ``execution_count`` counts
model calls (a micro-batch is one) and, for ``_raw``, ``inference_count`` the batch
elements, both from :class:`runtime.kserve.raw.RawTap`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from runtime.metrics import ServerMetrics
from runtime.proto.inference import grpc_service_pb2 as kpb

STAGE_SERIES = "understudy_stage_duration_seconds"
RAW_STAGE_SERIES = "understudy_raw_stage_duration_seconds"


def stage_duration(registry: CollectorRegistry, series: str, stage: str) -> kpb.StatisticDuration:
    """Count and total nanoseconds of one stage of a histogram ``series``."""
    labels = {"stage": stage}
    count = registry.get_sample_value(f"{series}_count", labels) or 0.0
    seconds = registry.get_sample_value(f"{series}_sum", labels) or 0.0
    return kpb.StatisticDuration(count=int(count), ns=round(seconds * 1e9))


def _errors(metrics: ServerMetrics) -> int:
    total = 0.0
    for family in metrics.errors.collect():
        total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def detection_statistics(name: str, version: str, metrics: ServerMetrics, tap: Any) -> Any:
    """ModelStatistics of the detection model ``name`` (see the module docstring)."""
    r = metrics.registry
    success = stage_duration(r, STAGE_SERIES, "total")
    decode = stage_duration(r, STAGE_SERIES, "decode")
    pre = stage_duration(r, STAGE_SERIES, "preprocess")
    stats = kpb.InferStatistics(
        success=success,
        fail=kpb.StatisticDuration(count=_errors(metrics)),
        queue=stage_duration(r, STAGE_SERIES, "queue"),
        compute_input=kpb.StatisticDuration(count=pre.count, ns=decode.ns + pre.ns),
        compute_infer=stage_duration(r, STAGE_SERIES, "infer"),
        compute_output=stage_duration(r, STAGE_SERIES, "postprocess"),
    )
    return kpb.ModelStatistics(
        name=name,
        version=version,
        last_inference=int(getattr(tap, "last_image_ms", 0)),
        inference_count=success.count,
        execution_count=int(getattr(tap, "image_calls", 0)),
        inference_stats=stats,
    )


def raw_statistics(name: str, version: str, metrics: ServerMetrics, tap: Any) -> Any:
    """ModelStatistics of the ``<name>_raw`` model (see the module docstring)."""
    r = metrics.registry
    success = stage_duration(r, RAW_STAGE_SERIES, "total")
    infer = stage_duration(r, RAW_STAGE_SERIES, "infer")
    stats = kpb.InferStatistics(
        success=success,
        queue=stage_duration(r, RAW_STAGE_SERIES, "queue"),
        compute_input=kpb.StatisticDuration(count=infer.count),
        compute_infer=infer,
        compute_output=kpb.StatisticDuration(count=infer.count),
    )
    return kpb.ModelStatistics(
        name=name,
        version=version,
        last_inference=int(getattr(tap, "last_raw_ms", 0)),
        inference_count=int(getattr(tap, "raw_items", 0)),
        execution_count=int(getattr(tap, "raw_calls", 0)),
        inference_stats=stats,
    )
