"""`understudy ros` is a runtime command; without rclpy / vision_msgs it ends in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime.cli import build_parser, main
from runtime.errors import MissingPackage
from runtime.ros.node import message_types


def test_ros_is_listed_and_parses_ros_args() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["ros", "--input", "/cam/image", "--server", "h:1", "--ros-args", "-r", "__ns:=/x"]
    )
    assert args.command == "ros" and args.input == ["/cam/image"]
    assert args.ros_args == ["-r", "__ns:=/x"]


def test_without_rclpy_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "rclpy", None)  # import rclpy -> ImportError
    assert main(["ros", "--input", "/cam/image"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "understudy[ros]" in err and "ros.sh" in err


def test_bad_flags_name_the_setting(capsys: pytest.CaptureFixture) -> None:
    assert main(["ros", "--input", "a", "--input", "b", "--output", "x"]) == 2
    assert "output_topics" in capsys.readouterr().err


def test_without_vision_msgs_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vision_msgs", None)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    with pytest.raises(MissingPackage, match=r"scripts/side_env/ros\.sh"):
        message_types()


def test_ros_packages_only_in_the_ros_extra() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("ros-")]
    ros = project["optional-dependencies"]["ros"]
    assert any(d.startswith("ros-rclpy[fastrtps]") for d in ros)
    assert {"ros-sensor-msgs", "ros-std-msgs", "ros-geometry-msgs"} <= {
        d.split(">")[0] for d in ros
    }
