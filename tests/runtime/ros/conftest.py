"""The ROS side env's Python for the tests that need rclpy (they run it in subprocesses)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "side_env" / "ros.sh"
ENV_DIR = ROOT / ".side-envs" / "ros"


@pytest.fixture(scope="session")
def ros_python() -> Path:
    """The ROS side env's Python (built by scripts/side_env/ros.sh when missing or stale),
    or $UNDERSTUDY_ROS_PYTHON: a Python that has rclpy and vision_msgs (a sourced ROS 2)."""
    given = os.environ.get("UNDERSTUDY_ROS_PYTHON")
    if given:
        return Path(given)
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1500)
    if r.returncode != 0:
        failed = ENV_DIR / "FAILED"
        reason = failed.read_text().strip() if failed.exists() else r.stderr.strip()[-500:]
        pytest.skip(reason)
    return ENV_DIR / "venv" / "bin" / "python"
