"""The tritonclient side environment (scripts/side_env/triton.sh), built when missing.

tritonclient 2.41.0 needs protobuf < 5, the project pins a newer one: its code runs in a
venv of its own (``.side-envs/triton``) as a subprocess. A missing environment is built
here (minutes, once); if that fails the tests FAIL naming the script and its failed step,
they are never skipped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "side_env" / "triton.sh"
SIDE_PYTHON = ROOT / ".side-envs" / "triton" / "bin" / "python"
STAMP = ROOT / ".side-envs" / "triton" / ".installed-2.41.0"


@pytest.fixture(scope="session")
def triton_python() -> Path:
    """The side environment's python (tritonclient[grpc]==2.41.0 importable)."""
    if not STAMP.exists():
        result = subprocess.run(
            ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1200, cwd=ROOT
        )
        if result.returncode != 0 or not STAMP.exists():
            failed = [line for line in result.stderr.splitlines() if "FAILED" in line]
            why = failed[-1] if failed else result.stderr.strip()[-500:]
            pytest.fail(
                "the tritonclient side environment could not be built by "
                f"{SCRIPT.relative_to(ROOT)}: {why}",
                pytrace=False,
            )
    return SIDE_PYTHON
