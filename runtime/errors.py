"""Project exceptions: every user error names the thing at fault and what to do.

The CLI prints ``str(err)`` on one line and exits 2; the gRPC server maps
:class:`InputError` to INVALID_ARGUMENT for that frame and keeps serving.
"""

from __future__ import annotations


class UnderstudyError(Exception):
    """Base class for errors caused by user input (files, configs, frames)."""


class ConfigError(UnderstudyError):
    """A config file or key is wrong (unknown key, bad type, bad value)."""


class DataError(UnderstudyError):
    """A dataset is wrong: missing/corrupt image, bad label line, bad box."""


class ModelFileError(UnderstudyError):
    """A model file (checkpoint, ONNX, engine) is missing, corrupt or of the wrong kind."""


class InputError(UnderstudyError):
    """A frame or array handed to the runtime has the wrong shape, dtype or encoding."""


class BackendUnavailable(UnderstudyError):
    """A backend's libraries (TensorRT, CUDA, torch) are not installed here."""


class MissingPackage(UnderstudyError):
    """An optional part's packages (an extra: eval, train) are not installed here; the
    message names them and the ``pip install 'understudy[EXTRA]'`` that brings them."""
