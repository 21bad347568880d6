"""Inference backends behind one small protocol; `open_backend` picks one by file type."""

from runtime.backends.base import Backend, check_batch
from runtime.backends.factory import open_backend

__all__ = ["Backend", "check_batch", "open_backend"]
