"""`import runtime` (and the CLI) must work on a Jetson image without torch, and without the
distill package: the runtime stands alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.runtime.tiny_models import build_conv_model, make_spec

ROOT = Path(__file__).resolve().parents[1]
BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):  # as if the packages were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".", 1)[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(
    code: str, blocked: tuple[str, ...] = ("torch",), cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where the ``blocked`` packages cannot be found."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK.format(blocked=blocked) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_block_really_blocks_torch_and_distill() -> None:
    for name in ("torch", "distill"):
        r = run_blocked(f"import {name}", blocked=("torch", "distill"))
        assert r.returncode != 0 and "blocked" in r.stderr


def _import_every_runtime_module(blocked: tuple[str, ...]) -> None:
    r = run_blocked(
        """
        import pkgutil, importlib, runtime
        names = [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
        for name in names:
            importlib.import_module(name)
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print(len(names))
        """,
        blocked,
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 5


def test_runtime_imports_without_torch() -> None:
    _import_every_runtime_module(("torch",))


def test_runtime_imports_without_torch_and_distill() -> None:
    _import_every_runtime_module(("torch", "distill"))


def test_cli_help_without_torch() -> None:
    r = run_blocked(
        """
        from runtime.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0
        """
    )
    assert r.returncode == 0, r.stderr
    assert " train " in r.stdout and "pip install" not in r.stdout  # distill is here


def test_cli_help_without_distill_says_how_to_get_the_offline_commands() -> None:
    r = run_blocked(
        """
        from runtime.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0
        """,
        ("torch", "distill"),
    )
    assert r.returncode == 0, r.stderr
    commands = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("    ")}
    assert {"detect", "serve", "stream", "bench"} <= commands
    assert not commands & {"data", "train", "distill", "export", "demo"}
    install = [line for line in r.stdout.splitlines() if "pip install" in line]
    assert len(install) == 1
    assert "train" in install[0] and "pip install 'understudy[train]'" in install[0]


def test_offline_command_without_distill_is_one_line_exit_2() -> None:
    r = run_blocked(
        """
        from runtime.cli import main
        sys.exit(main(["-v", "train", "--data", "nowhere", "--out", "nowhere"]))
        """,
        ("torch", "distill"),
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("understudy train: error: an offline command, not installed")
    assert "pip install 'understudy[train]'" in r.stderr


def test_offline_command_without_torch_names_what_to_install() -> None:
    r = run_blocked(
        """
        from runtime.cli import main
        sys.exit(main(["models"]))
        """
    )
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr == "understudy models: error: needs torch, not installed here; " + (
        "pip install 'understudy[train]'\n"
    )


def test_bench_data_without_torch_and_distill(tmp_path: Path, tiny_synth: Path) -> None:
    """`bench --data` scores COCO mAP with the runtime alone (pycocotools installed)."""
    student = build_conv_model(tmp_path / "s.onnx", make_spec(output_layout="decoded_xyxy"))
    (tmp_path / "budget.yaml").write_text("latency:\n  p99_ms: 100000\n")
    out = tmp_path / "out"
    argv = [
        "bench",
        "--student",
        str(student),
        "--budget",
        str(tmp_path / "budget.yaml"),
        "--data",
        str(tiny_synth),
        "--runs",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    r = run_blocked(
        f"""
        from runtime.cli import main
        sys.exit(main({argv!r}))
        """,
        ("torch", "distill"),
    )
    assert r.returncode == 0, r.stderr
    student_row = json.loads((out / "budget.json").read_text())["student"]
    assert isinstance(student_row["map50_95"], float) and isinstance(student_row["map50"], float)
