"""runtime.files: atomic writes leave the old file or the new one, never a part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import UnderstudyError
from runtime.files import atomic_path, ensure_writable, write_atomic, write_json_atomic


def test_write_atomic_bytes_and_text(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "a.bin"
    assert write_atomic(p, b"\x00\x01") == p
    assert p.read_bytes() == b"\x00\x01"
    write_atomic(p, "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.bin"]  # no temp left behind


def test_write_json_atomic(tmp_path: Path) -> None:
    p = write_json_atomic(tmp_path / "r.json", {"a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2]} and p.read_text().endswith("\n")


def test_failed_writer_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_path_keeps_the_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "frame.jpg") as tmp:
        assert tmp.suffix == ".jpg" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"x")
    assert (tmp_path / "frame.jpg").read_bytes() == b"x"


def test_unwritable_target_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(UnderstudyError, match="cannot write"):
        write_atomic(tmp_path / "d", b"x")  # a directory cannot be replaced by a file
    with pytest.raises(UnderstudyError, match="is a directory"):
        ensure_writable(tmp_path / "d")
    ensure_writable(tmp_path / "new" / "out.onnx")
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())


def test_fsync_flushes_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch
) -> None:
    import os

    events: list[tuple[str, str]] = []
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace
    names: dict[int, str] = {}

    def fake_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        names[fd] = Path(path).name
        return fd

    def fake_fsync(fd: int) -> None:
        events.append(("fsync", names.get(fd, "?")))
        real_fsync(fd)

    def fake_replace(src, dst) -> None:
        events.append(("rename", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "fsync", fake_fsync)
    monkeypatch.setattr(os, "replace", fake_replace)
    write_atomic(tmp_path / "last.pt", b"weights", fsync=True)
    tmp_name = f".last.tmp{os.getpid()}.pt"
    assert events == [("fsync", tmp_name), ("rename", "last.pt"), ("fsync", tmp_path.name)]
    events.clear()
    write_atomic(tmp_path / "report.json", b"{}")  # the default: no fsync
    assert events == [("rename", "report.json")]
