"""A fresh `pip install .` (no extras, so no torch): the runtime commands work, and an
offline command says in one line what to install.

One virtual environment per session of this module (pip needs a package index or its
cache; without them the install fails, and so does this test, with pip's reason).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from tests.runtime.test_serve_cli import ServeProcess
from tests.runtime.tiny_models import build_conv_model, make_spec, scene

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "runtime", "distill")  # what a wheel is built from


@dataclass(frozen=True)
class FreshInstall:
    """A venv holding only ``pip install .``, and a work folder outside the repository."""

    root: Path
    bin: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``understudy ARGS`` (or ``python`` when args[0] == "python") in the venv."""
        exe = "python" if args[0] == "python" else "understudy"
        cmd = [str(self.bin / exe), *(args[1:] if exe == "python" else args)]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, env=self.env
        )


def _pip_install(root: Path) -> Path:
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    pins = ROOT / "requirements-dev.txt"  # the CI's versions (and pip's cached wheels)
    r = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-c", str(pins), str(src)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    if r.returncode != 0:
        pytest.fail(
            "pip install of the repository (no extras) failed; it needs a package index or "
            f"pip's cache for the runtime's dependencies:\n{r.stderr[-3000:]}",
            pytrace=False,
        )
    return bin_dir


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> FreshInstall:
    root = tmp_path_factory.mktemp("fresh-install")
    bin_dir = _pip_install(root)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        XDG_CACHE_HOME=str(root / "cache"),
        UNDERSTUDY_TOKEN="tok",
    )
    return FreshInstall(root, bin_dir, env)


@pytest.fixture(scope="module")
def model(fresh: FreshInstall) -> Path:
    return build_conv_model(fresh.root / "tiny.onnx", make_spec(output_layout="decoded_xyxy"))


@pytest.fixture(scope="module")
def images(fresh: FreshInstall) -> Path:
    folder = fresh.root / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"frame{i}.png"), scene(48, 64, seed=i))
    return folder


def test_installed_without_torch_from_the_venv(fresh: FreshInstall) -> None:
    r = fresh.run(
        "python",
        "-c",
        "import importlib.util, runtime; "
        "print(importlib.util.find_spec('torch') is None, runtime.__file__)",
    )
    assert r.returncode == 0, r.stderr
    no_torch, where = r.stdout.split()
    assert no_torch == "True"
    assert Path(where).is_relative_to(fresh.root / "venv")  # not the checkout


def test_help_lists_the_runtime_commands(fresh: FreshInstall) -> None:
    r = fresh.run("--help")
    assert r.returncode == 0, r.stderr
    commands = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("    ")}
    assert {"compile", "detect", "serve", "stream", "bench"} <= commands


def test_compile_check(fresh: FreshInstall, model: Path) -> None:
    r = fresh.run("compile", "--check", str(model))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no problems" in r.stdout


def test_detect_images(fresh: FreshInstall, model: Path, images: Path) -> None:
    out = fresh.root / "detect"
    r = fresh.run("detect", str(images), "--model", str(model), "--out", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "detections.json").read_text())
    assert report["backend"] == "onnxruntime"
    assert [f["name"] for f in report["frames"]] == ["frame0.png", "frame1.png", "frame2.png"]


def test_serve_and_stream(fresh: FreshInstall, model: Path, images: Path) -> None:
    serve = [str(fresh.bin / "understudy"), "serve", "--model", str(model)]
    server = ServeProcess([*serve, "--port", "0", "--threads", "1"], env=fresh.env)
    try:
        target = server.target()
        server.wait_for("ready", timeout=60)
        summary = fresh.root / "stream.json"
        r = fresh.run(
            "stream",
            str(images),
            "--server",
            target,
            "--fps",
            "20",
            "--budget-ms",
            "10000",
            "--json",
            str(summary),
        )
        assert r.returncode == 0, r.stderr
        got = json.loads(summary.read_text())
        assert (got["sent"], got["answered"], got["errors"]) == (3, 3, 0)
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(30) == 0
    finally:
        server.kill()


def test_bench_latency_gate(fresh: FreshInstall, model: Path) -> None:
    budget = fresh.root / "budget.yaml"
    budget.write_text("latency:\n  p99_ms: 100000\n")
    out = fresh.root / "bench"
    r = fresh.run(
        "bench",
        "--student",
        str(model),
        "--budget",
        str(budget),
        "--runs",
        "5",
        "--out",
        str(out),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "budget.json").read_text())["passed"] is True


def test_bench_data_says_to_install_the_eval_extra(fresh: FreshInstall, model: Path) -> None:
    budget = fresh.root / "budget.yaml"
    budget.write_text("latency:\n  p99_ms: 100000\n")
    r = fresh.run("bench", "--student", str(model), "--budget", str(budget), "--data", "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "pycocotools" in r.stderr and "pip install 'understudy[eval]'" in r.stderr


def test_offline_command_says_what_to_install(fresh: FreshInstall) -> None:
    r = fresh.run("train", "--data", "data", "--out", str(fresh.root / "train"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (
        "understudy train: error: needs torch, not installed here; "
        "pip install 'understudy[train]'\n"
    )
