"""`import runtime` (and the CLI's --help) must work on a Jetson image without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_block_really_blocks_torch() -> None:
    r = run_blocked("import torch")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_runtime_imports_without_torch() -> None:
    r = run_blocked(
        """
        import pkgutil, importlib, runtime
        names = [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
        for name in names:
            importlib.import_module(name)
        assert "torch" not in sys.modules
        print(len(names))
        """
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 5


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
