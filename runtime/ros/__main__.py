"""``python -m runtime.ros [flags] [--ros-args ...]``: the same bridge as ``understudy ros``."""

from __future__ import annotations

import sys

from runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(["ros", *sys.argv[1:]]))
