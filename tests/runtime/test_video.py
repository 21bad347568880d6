"""runtime.video.VideoSink: the one annotated-video writer of detect and stream."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.video import VideoSink


@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_sink_writes_every_frame_at_the_first_size(tmp_path: Path, name: str) -> None:
    sink = VideoSink(tmp_path / "sub" / name, fps=10)
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    frames.append(np.zeros((30, 30, 3), np.uint8))  # another size: resized, not dropped
    for f in frames:
        sink.write(f)
        assert not (tmp_path / "sub" / name).exists()  # only the temp file while writing
    sink.close()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [name]
    cap = cv2.VideoCapture(str(tmp_path / "sub" / name))
    count = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (48, 64, 3)
        count += 1
    cap.release()
    assert count == 4


def test_sink_without_frames_writes_nothing(tmp_path: Path) -> None:
    VideoSink(tmp_path / "none.mp4", fps=0).close()
    assert not list(tmp_path.iterdir())


def test_sink_that_cannot_open_names_the_file(tmp_path: Path, monkeypatch) -> None:
    class Closed:
        def __init__(self, *args) -> None:
            pass

        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr(cv2, "VideoWriter", Closed)
    sink = VideoSink(tmp_path / "x.mp4", fps=30)
    with pytest.raises(ConfigError, match=r"x\.mp4: cannot write a video"):
        sink.write(np.zeros((8, 8, 3), np.uint8))
    assert not list(tmp_path.iterdir())
