"""Holding out site frames by time, not at random.

Consecutive frames of a camera are near-identical, so a random hold-out would score the
student on frames it trained on. Each stream (a camera, a video, an image folder) is put
in time order (capture time where known, else file / frame order) and cut into three
consecutive runs::

    | train (oldest)              | gap | stop (early stopping) | gap | test (latest) |

``test_share`` and ``stop_share`` are shares of each stream's frames (rounded, at least
one frame each when the share is > 0 and the stream has room); ``gap`` frames are
dropped at each cut. So within a stream every train frame is older than every stop
frame, and every stop frame older than every test frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from distill.adapt.sources import SiteFrame
from runtime.errors import DataError


@dataclass(frozen=True)
class SiteSplit:
    """The three parts, each in (stream, time) order."""

    train: list[SiteFrame]
    stop: list[SiteFrame]
    test: list[SiteFrame]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "stop": len(self.stop), "test": len(self.test)}


def _share(n: int, share: float) -> int:
    return 0 if share <= 0 else max(1, round(n * share))


def split_by_time(
    frames: Sequence[SiteFrame], test_share: float, stop_share: float, gap: int = 0
) -> SiteSplit:
    """Split every stream of ``frames`` by time (see the module docstring).

    Raises DataError when the train or test part would be empty."""
    if not (0 < test_share < 1 and 0 <= stop_share < 1 and test_share + stop_share < 1):
        raise DataError(
            f"site hold-out shares test {test_share} and stop {stop_share} must be in [0, 1) "
            "with test > 0 and test + stop < 1"
        )
    if gap < 0:
        raise DataError(f"site gap must be >= 0 frames, got {gap}")
    streams: dict[str, list[SiteFrame]] = {}
    for f in frames:
        streams.setdefault(f.stream, []).append(f)
    train: list[SiteFrame] = []
    stop: list[SiteFrame] = []
    test: list[SiteFrame] = []
    for name in sorted(streams):
        ordered = sorted(streams[name], key=lambda f: f.sort_key)
        n = len(ordered)
        n_test, n_stop = _share(n, test_share), _share(n, stop_share)
        n_train = n - n_test - n_stop - gap * (1 + (n_stop > 0))
        if n_train < 1:  # too short to split: the whole stream trains
            train += ordered
            continue
        train += ordered[:n_train]
        at = n_train + gap
        if n_stop:
            stop += ordered[at : at + n_stop]
            at += n_stop + gap
        test += ordered[at:]
    if not train or not test:
        raise DataError(
            f"{len(frames)} site frames are too few to hold out {test_share:.0%} by time "
            "and train on the rest; record more frames"
        )
    return SiteSplit(train, stop, test)
