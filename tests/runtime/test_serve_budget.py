"""`understudy serve --budget`: the start-up check, reported in the log, health and
GetModelInfo; `--strict-budget` refuses to serve."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from runtime.budget import Budget, LatencyBudget, parse_budget
from runtime.cli import build_parser, main
from runtime.client import DetectorClient
from runtime.commands.serve import server_config
from runtime.errors import ConfigError
from runtime.measure import rss_mb
from runtime.model_spec import ModelSpec
from runtime.proto import SERVICE_NAME
from runtime.server import BUDGET_HEALTH_NAME, build_server
from runtime.server_config import ServerConfig
from runtime.startup import startup_budget
from tests.runtime.serving_fakes import FakeDetector, build_constant_onnx, running, solid

pytestmark = pytest.mark.timeout(60)


def _budget(**data: object) -> Budget:
    return parse_budget(data, "budget.yaml")


# ---------------------------------------------------------------------- which lines
def test_startup_checks_latency_input_and_memory_and_defers_the_rest() -> None:
    budget = _budget(
        latency={"p50_ms": 10, "p99_ms": 20, "input": 320},
        min_speedup=4,
        min_accuracy_retention=0.9,
        max_memory_mb=300,
    )
    result = startup_budget(budget, p50_ms=8.0, p99_ms=25.0, input_size=320, memory_mb=120.0)
    lines = {c.check: c.passed for c in result.lines}
    assert lines == {
        "input_size": True,
        "student_p50_ms": True,
        "student_p99_ms": False,
        "student_memory_mb": True,
    }
    assert result.deferred == ("speedup_vs_teacher", "accuracy_retention")
    assert not result.passed and result.failed == ("student_p99_ms",)
    summary = result.summary()
    assert summary.startswith("budget FAILED: student_p99_ms 25.0 > 20.0")
    assert "checked by `understudy bench`, not here: speedup_vs_teacher, accuracy_retention" in (
        summary
    )
    # memory not measured (model loaded elsewhere): deferred, not failed
    unmeasured = startup_budget(budget, p50_ms=8.0, p99_ms=19.0, input_size=320)
    assert unmeasured.passed and "student_memory_mb" in unmeasured.deferred
    # only deferred lines: nothing to check here, so nothing fails
    only_teacher = startup_budget(_budget(min_speedup=3), p50_ms=1, p99_ms=1, input_size=320)
    assert only_teacher.passed and only_teacher.lines == ()
    assert only_teacher.summary().startswith("no budget line checkable at start-up")


def test_unmeasured_latency_fails_with_the_reason() -> None:
    budget = Budget(LatencyBudget(p99_ms=50.0, batch=8))
    result = startup_budget(
        budget, p50_ms=None, p99_ms=None, input_size=None, latency_note="batch 8 not formed"
    )
    (line,) = result.lines
    assert (line.check, line.value, line.passed) == ("student_p99_ms", None, False)
    assert "batch 8 not formed" in result.summary()


# ---------------------------------------------------------------------- in the server
def test_failing_budget_still_serves_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    budget = _budget(latency={"p99_ms": 1.0, "input": 32}, min_speedup=5)
    caplog.set_level(logging.INFO, logger="runtime.server")
    det = FakeDetector(delay_s=0.005)  # p99 >= 5 ms > 1 ms
    with running(det, budget=budget, budget_source="b.yaml", latency_probe_runs=5) as (srv, c):
        assert c.health() == c.health(SERVICE_NAME) == "SERVING"
        assert c.health(BUDGET_HEALTH_NAME) == "NOT_SERVING"
        info = c.model_info()
        assert c.detect(solid(1)).detections  # serving normally
    assert not info.budget_met
    assert info.budget_report.startswith("b.yaml: budget FAILED: student_p99_ms ")
    assert "> 1.0" in info.budget_report and "speedup_vs_teacher" in info.budget_report
    assert srv.budget is not None and srv.budget.failed == ("student_p99_ms",)
    assert srv.refused is None
    (record,) = [r for r in caplog.records if "budget FAILED" in r.getMessage()]
    assert record.levelno == logging.WARNING and "b.yaml" in record.getMessage()


def test_met_budget_reports_met() -> None:
    budget = _budget(latency={"p50_ms": 10_000, "p99_ms": 10_000, "input": 32})
    with running(FakeDetector(), budget=budget, strict_budget=True) as (srv, c):
        assert c.health() == "SERVING" and c.health(BUDGET_HEALTH_NAME) == "SERVING"
        info = c.model_info()
    assert info.budget_met and "budget met (input_size 32.0 vs 32.0" in info.budget_report
    assert srv.budget.passed


def test_no_budget_keeps_the_old_report() -> None:
    with running(FakeDetector()) as (srv, c):
        info = c.model_info()
        with pytest.raises(grpc.RpcError) as e:
            c.health(BUDGET_HEALTH_NAME)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND  # no budget: the name is unknown
    assert info.budget_met and "budget 10000 ms" in info.budget_report and srv.budget is None


def test_strict_budget_refuses_to_serve() -> None:
    budget = _budget(latency={"p99_ms": 50.0, "input": 320})  # the fake model's input is 32
    srv = build_server(FakeDetector(), ServerConfig(port=0, budget=budget, strict_budget=True))
    try:
        assert srv.wait_ready(10) is False
        assert srv.refused is not None and "input_size 32.0 != 320.0" in srv.refused
        assert srv.refused.endswith("refusing to serve (--strict-budget)")
        with DetectorClient(f"127.0.0.1:{srv.port}", timeout=5) as c:
            assert c.health() == c.health(SERVICE_NAME) == "NOT_SERVING"
            assert c.health(BUDGET_HEALTH_NAME) == "NOT_SERVING"
            with pytest.raises(grpc.RpcError) as e:
                c.detect(solid(1))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "refuses" in e.value.details() and "input_size" in e.value.details()
    finally:
        srv.stop(0.5)


def test_budget_batch_probed_or_reported_unformable() -> None:
    det = FakeDetector(max_batch=4)
    budget = _budget(latency={"p99_ms": 10_000, "batch": 4})
    with running(det, budget=budget, max_batch=4, latency_probe_runs=3) as (srv, _c):
        assert srv.budget.passed
    assert det.batches.count(4) == 3  # three probe calls of batch 4
    with running(FakeDetector(max_batch=4), budget=budget, max_batch=2) as (srv, c):
        info = c.model_info()
    assert not info.budget_met and srv.budget.failed == ("student_p99_ms",)
    assert "the budget's latency is at batch 4" in info.budget_report
    assert "at most 2" in info.budget_report


BALLAST_MB = 150.0  # what the fake model allocates and writes when the server loads it
# RSS also counts what loading costs besides the ballast (allocator, the probe's image):
# measured 150.9-154.1 MiB in 4 loads on the development machine
MEMORY_TOLERANCE = 0.2


@pytest.mark.parametrize(("limit", "passed"), [(100.0, False), (250.0, True)])
def test_memory_line_measures_what_the_loaded_model_allocates(limit: float, passed: bool) -> None:
    if rss_mb() is None:
        pytest.skip("resident memory is only measured on Linux (/proc)")
    budget = _budget(latency={"p99_ms": 10_000}, max_memory_mb=limit)

    def load() -> FakeDetector:  # the server loads the model: it measures what loading adds
        return FakeDetector(ballast_mb=BALLAST_MB)

    with running(load, budget=budget, budget_source="b.yaml") as (srv, c):
        info = c.model_info()
    (line,) = [line for line in srv.budget.lines if line.check == "student_memory_mb"]
    assert line.value == pytest.approx(BALLAST_MB, rel=MEMORY_TOLERANCE)
    assert (line.passed, srv.budget.passed, info.budget_met) == (passed, passed, passed)
    if not passed:
        assert info.budget_report.startswith("b.yaml: budget FAILED: student_memory_mb ")


def test_memory_line_deferred_when_the_model_was_loaded_elsewhere() -> None:
    budget = _budget(latency={"p99_ms": 10_000}, max_memory_mb=1.0)
    with running(FakeDetector(ballast_mb=BALLAST_MB), budget=budget) as (srv, _c):
        assert "student_memory_mb" in srv.budget.deferred and srv.budget.passed
        assert "student_memory_mb" not in {line.check for line in srv.budget.lines}


# ---------------------------------------------------------------------- the command
def _args(*argv: str):
    return build_parser().parse_args(["serve", "--model", "m.onnx", *argv])


def test_cli_budget_flags(tmp_path: Path) -> None:
    budget = tmp_path / "budget.yaml"
    budget.write_text("latency: {p50_ms: 12, p99_ms: 25}\n")
    config, teacher = server_config(_args("--budget", str(budget)))
    assert config.budget_ms == 25.0 and config.budget.latency.p50_ms == 12.0
    assert config.budget_source == str(budget) and not config.strict_budget and teacher is None
    config, _ = server_config(
        _args("--budget", str(budget), "--budget-ms", "40", "--strict-budget")
    )
    assert config.budget_ms == 40.0 and config.strict_budget
    assert server_config(_args())[0].budget_ms == 33.0 and server_config(_args())[0].budget is None
    with pytest.raises(ConfigError, match="--strict-budget needs --budget"):
        server_config(_args("--strict-budget"))
    budget.write_text("latency: {p99: 25}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'latency\.p99'"):
        server_config(_args("--budget", str(budget)))


def test_cli_strict_budget_exits_1_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ModelSpec(
        class_names=("person", "car", "dog"),
        input_size=(64, 64),
        output_layout="decoded_xyxy",
        model_hash="abc",
    )
    model = build_constant_onnx(tmp_path / "tiny.onnx", spec)
    budget = tmp_path / "budget.yaml"
    budget.write_text("latency: {p99_ms: 0.000001}\n")  # no model is that fast
    argv = ["serve", "--model", str(model), "--port", "0", "--threads", "1"]
    assert main([*argv, "--budget", str(budget), "--strict-budget"]) == 1
    err = capsys.readouterr().err
    assert "budget FAILED: student_p99_ms" in err and "refusing to serve (--strict-budget)" in err
