"""Errors raised while reading, importing, caching or loading weights.

Every class derives from :class:`WeightsError`, whose message says what is wrong and what to do, so
callers (the CLI, the napari widget) can catch one type and show the message as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CorruptCheckpointError",
    "HashMismatchError",
    "KeyMismatchError",
    "PresetMismatchError",
    "UnsafeCheckpointError",
    "WeightsError",
    "WeightsNotFoundError",
]


class WeightsError(RuntimeError):
    """A weights file or the weights cache cannot be used; the message says why and what to do."""


class UnsafeCheckpointError(WeightsError):
    """The file holds pickled objects other than tensors and was refused (nothing was executed)."""


class CorruptCheckpointError(WeightsError):
    """The file is truncated, corrupt, not a state dict, or holds non-finite values."""


class KeyMismatchError(WeightsError):
    """Keys or shapes differ from the preset's architecture (``missing``/``unexpected``/``mismatched``).

    Parameters
    ----------
    message : str
        The full explanation.
    missing, unexpected, mismatched : iterable of str
        Keys the architecture needs but the file lacks, keys the architecture does not have, and
        descriptions of keys whose shape or dtype kind differs. Stored as lists of the same names.
    """

    def __init__(
        self,
        message: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


class HashMismatchError(WeightsError):
    """A file's sha256 differs from the recorded or published one."""


class PresetMismatchError(WeightsError):
    """A safetensors file belongs to another preset."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """Weights are not installed or a needed file is missing and cannot be fetched."""
