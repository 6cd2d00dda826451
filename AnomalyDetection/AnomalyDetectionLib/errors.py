"""Exceptions of the engine.

Every failure a user can cause (bad file, bad model, missing CUDA) is raised as an
:class:`AnomalyDetectionError` subclass with a one-line message naming the file and the problem,
so the command line can print it and exit with code 2 and the Slicer module can show it in a
dialog, without a traceback.
"""

from __future__ import annotations


class AnomalyDetectionError(Exception):
    """Base class of every user-facing error of the engine."""


class InputError(AnomalyDetectionError):
    """An input image cannot be used: unreadable, not 3D scalar, empty, constant, NaN/Inf..."""


class ModelError(AnomalyDetectionError):
    """A model file is not a model, its card does not match the code, or it does not fit the input."""


class DeviceError(AnomalyDetectionError):
    """The requested compute device is not available (e.g. ``cuda`` without CUDA)."""


class DistributedError(AnomalyDetectionError):
    """Distributed training cannot start: no torchrun environment where one is required, or no process group."""


class OutputError(AnomalyDetectionError):
    """An output cannot be written (folder read-only or full): a batch stops here, keeping what is complete."""


class OutputExistsError(OutputError):
    """The output folder holds another run's outputs of the same name; only ``--overwrite`` replaces them.

    Unlike a failed write this concerns one input, so a batch records it and goes on.
    """


class Cancelled(AnomalyDetectionError):
    """The caller's cancel check asked to stop; nothing was written."""
