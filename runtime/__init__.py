"""Understudy runtime: frames in, detections out. Never imports torch at module level."""

__version__ = "0.1.0"
