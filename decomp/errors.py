"""Errors decomp raises on bad input or a failed run.

Every user-facing problem is a :class:`DecompError` with a message that names the offending
value; the CLI prints it once per rank (prefixed with the rank) and ends the whole MPI job.
"""

from __future__ import annotations


class DecompError(Exception):
    """Base class: a problem the user can fix (config, data, launch)."""


class ConfigError(DecompError, ValueError):
    """A config key, value or combination is invalid."""


class DataError(DecompError, ValueError):
    """A dataset is missing or malformed."""


class PayloadError(DecompError, ValueError):
    """A compressed payload failed its header check (corrupted, truncated, wrong kind)."""


class UsageError(DecompError, RuntimeError):
    """An API called out of order or with the wrong kind of argument (a programming error,
    not a config problem): e.g. ``exchange_finish`` without ``exchange_start``, a second
    ``gather_start`` while one is in flight, ``state_dict()`` before ``init()``. A
    ``RuntimeError``, so ``except RuntimeError`` sites keep catching it."""


class StorageError(DecompError, OSError):
    """A file of a run could not be written (disk full, quota, permissions): the message
    names the file, the bytes it needed and the fix."""


class LaunchError(DecompError, RuntimeError):
    """The MPI world cannot run this config (rank count, launch context)."""


class DivergenceError(DecompError, FloatingPointError):
    """The run produced a non-finite value or its loss blew up.

    Carries the step and the algorithm so the report says where it happened.
    """

    def __init__(self, message: str, *, step: int, algorithm: str = "", quantity: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.algorithm = algorithm
        self.quantity = quantity
