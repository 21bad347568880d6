"""``ServerConfig``: the settings of ``understudy serve`` (one field per flag, the
shadow teacher's in :class:`ShadowConfig`) and their validation. :mod:`runtime.server`
builds the server from it and hands it whole to the scheduler and the servicer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.budget import Budget
from runtime.errors import ConfigError

POLICIES = ("keep-latest", "queue")  # what a stream's lane does while the model is busy
DEADLINE_FROM = ("jitter", "arrival", "capture")  # when a frame's budget starts
SCHEDULES = ("deficit", "edf", "arrival")  # which stream the model serves next (scheduler)


def _plain_name(name: str) -> bool:
    """A model name clients can put in a path or config file: [A-Za-z0-9._-]+."""
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


@dataclass(frozen=True)
class ShadowConfig:
    """Shadow teacher settings (the ``understudy serve --shadow-*`` flags)."""

    every: int = 10  # offer every N-th answered frame
    teacher: str = "teacher"  # the teacher's name in reports (its file name)
    iou_threshold: float = 0.5
    teacher_min_score: float = 0.0  # reference = teacher boxes at or above this score
    save_dir: str | None = None
    save_max_mb: float = 500.0
    save_below_f1: float = 0.5  # save frames whose F1 is below this
    queue_size: int = 1  # sampled frames waiting for the teacher (1 or 2)
    latency_window: int = 256  # recent teacher latencies kept for the median

    def validate(self) -> None:
        f1, iou = self.save_below_f1, self.iou_threshold
        checks = [
            (self.every >= 1, f"--shadow-every must be >= 1, got {self.every}"),
            (0 < iou <= 1, f"the shadow IoU threshold must be in (0, 1], got {iou}"),
            (self.save_max_mb > 0, f"--shadow-save-max-mb must be > 0, got {self.save_max_mb}"),
            (0 <= f1 <= 1, f"--shadow-save-below-f1 must be in [0, 1], got {f1}"),
            (self.queue_size in (1, 2), f"shadow queue size must be 1 or 2, not {self.queue_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class ServerConfig:
    """Server settings (the ``understudy serve`` flags)."""

    host: str = "127.0.0.1"
    port: int = 50051  # 0 = pick a free port
    unix_socket: str | None = None  # also listen on this Unix domain socket path
    budget_ms: float = 33.0  # default budget for frames that send 0
    policy: str = "keep-latest"  # or "queue"
    queue_size: int = 4  # per stream, policy "queue"
    max_batch: int = 1  # micro-batch across streams when the model takes batch > 1
    max_wait_ms: float = 2.0  # how long the worker waits to fill a micro-batch
    predict_drops: bool = True  # drop frames that would miss their budget (see scheduler)
    reply_margin_ms: float = 2.0  # of each budget, kept for the answer's trip to the client
    service_quantile: float = 0.99  # quantile of recent model calls used to predict misses
    schedule: str = "deficit"  # fair share across streams; "edf" or "arrival" (scheduler)
    # when budgets start: "jitter" = arrival, less the frame's delay beyond its stream's
    # quickest recent frame (read off capture times, whatever the clocks' offset);
    # "arrival"; or "capture" = the frame's capture time (synchronized clocks)
    deadline_from: str = "jitter"
    metrics_port: int | None = None  # None = no metrics endpoint, 0 = pick a free port
    max_message_mb: float = 16.0
    max_pixels: int = 4096 * 4096
    max_streams: int = 16
    max_outstanding: int = 32  # frames per stream read but not yet answered
    reduced_decode: bool = True  # decode large JPEGs at 1/2..1/8 scale (see runtime.frames)
    unary_workers: int = 8  # threads for unary calls (Detect, GetModelInfo, reflection)
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    warmup_runs: int = 3
    latency_probe_runs: int = 20
    teacher_latency_ms: float | None = None
    budget: Budget | None = None  # checked once the model is warm (module docstring)
    budget_source: str = "budget"  # the budget file, for messages
    strict_budget: bool = False  # refuse to serve when the budget fails
    shadow: ShadowConfig | None = None  # settings of the shadow teacher, when one is given
    model_name: str | None = None  # KServe v2 model name (None: the model's preset)
    extra_options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def validate(self) -> None:
        checks = [
            (self.policy in POLICIES, f"--policy must be one of {POLICIES}, got {self.policy!r}"),
            (self.budget_ms > 0, f"--budget-ms must be > 0, got {self.budget_ms}"),
            (
                self.deadline_from in DEADLINE_FROM,
                f"--deadline-from must be one of {DEADLINE_FROM}, got {self.deadline_from!r}",
            ),
            (
                0.0 < self.service_quantile <= 1.0,
                f"--service-quantile must be in (0, 1], got {self.service_quantile}",
            ),
            (
                self.reply_margin_ms >= 0,
                f"--reply-margin-ms must be >= 0, got {self.reply_margin_ms}",
            ),
            (
                self.schedule in SCHEDULES,
                f"--schedule must be one of {SCHEDULES}, got {self.schedule!r}",
            ),
            (self.queue_size >= 1, f"--queue-size must be >= 1, got {self.queue_size}"),
            (self.max_batch >= 1, f"--max-batch must be >= 1, got {self.max_batch}"),
            (self.max_wait_ms >= 0, f"--max-wait-ms must be >= 0, got {self.max_wait_ms}"),
            (self.max_message_mb > 0, f"--max-message-mb must be > 0, got {self.max_message_mb}"),
            (self.max_pixels > 0, f"--max-pixels must be > 0, got {self.max_pixels}"),
            (self.max_streams >= 1, f"--max-streams must be >= 1, got {self.max_streams}"),
            (0 <= self.port < 65536, f"--port must be in 0..65535, got {self.port}"),
            (
                (self.tls_cert is None) == (self.tls_key is None),
                "--tls-cert and --tls-key must be given together",
            ),
            (self.budget is not None or not self.strict_budget, "--strict-budget needs --budget"),
            (
                self.model_name is None or _plain_name(self.model_name),
                f"--model-name must be letters, digits, '.', '_' or '-', got {self.model_name!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.shadow is not None:
            self.shadow.validate()
