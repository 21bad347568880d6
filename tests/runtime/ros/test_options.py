"""The bridge's flags and ROS parameters."""

from __future__ import annotations

import argparse

import pytest

from runtime.errors import ConfigError
from runtime.ros.options import BridgeOptions, add_arguments, from_args


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_flags_become_options_and_ros_args_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNDERSTUDY_TOKEN", "secret")
    args = parse(
        [
            "--input",
            "/a/image",
            "--input",
            "/b/image/compressed",
            "--server",
            "h:1",
            "--budget-ms",
            "33",
            "--encode",
            "raw",
            "--ros-args",
            "-p",
            "budget_ms:=20.0",
        ]
    )
    o = from_args(args)
    assert o.input_topics == ("/a/image", "/b/image/compressed")
    assert o.outputs() == ("/a/image/detections", "/b/image/compressed/detections")
    assert (o.server, o.budget_ms, o.encode, o.token) == ("h:1", 33.0, "raw", "secret")
    assert args.ros_args == ["-p", "budget_ms:=20.0"]


def test_the_events_executor_is_the_default() -> None:
    assert from_args(parse([])).executor == "events"
    assert from_args(parse(["--executor", "single"])).executor == "single"
    assert BridgeOptions().parameters()["executor"] == "events"


def test_one_input_publishes_on_detections_by_default() -> None:
    assert from_args(parse([])).outputs() == ("detections",)
    assert from_args(parse(["--output", "/dets"])).outputs() == ("/dets",)


def test_parameters_exclude_the_token_and_override_flags() -> None:
    o = BridgeOptions(token="secret")
    params = o.parameters()
    assert "token" not in params and params["input_topics"] == ["image"]
    p = o.with_parameters({**params, "budget_ms": 20.0, "input_topics": ["/x"]})
    assert p.budget_ms == 20.0 and p.input_topics == ("/x",) and p.token == "secret"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input_topics": ()}, "input_topics"),
        ({"output_topics": ("a", "b")}, "output_topics"),
        ({"encode": "webp"}, "encode"),
        ({"input_type": "video"}, "input_type"),
        ({"budget_ms": -1.0}, "budget_ms"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"executor": "multi"}, "executor"),
    ],
)
def test_bad_settings_name_the_parameter(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        BridgeOptions().with_parameters(change)


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        BridgeOptions().with_parameters({"token": "x"})
