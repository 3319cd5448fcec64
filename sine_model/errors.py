"""napari-sine's errors: one root, :class:`SineError`, whose message says what is wrong and what to do.

Callers (the CLI, the napari widget) catch :class:`SineError` and show the message as it is. The
subclasses keep a standard base as well (``ValueError`` for bad input, ``RuntimeError`` for weights,
``FileNotFoundError`` for missing weights) so that code written against those keeps working.

- :class:`InputError` — a user input (image, labels, option, file) cannot be used;
  :class:`PropagationError` (references and targets), :class:`InputFileError` (files),
  :class:`ConfigError` (training configuration files) and :class:`CliError` (command-line usage) are its
  kinds.
- :class:`WeightsError` — a weights file or the weights cache cannot be used, with its kinds below.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "SineError",
    "InputError",
    "PropagationError",
    "InputFileError",
    "ConfigError",
    "CliError",
    "CorruptCheckpointError",
    "HashMismatchError",
    "KeyMismatchError",
    "PresetMismatchError",
    "UnsafeCheckpointError",
    "WeightsError",
    "WeightsNotFoundError",
]


class SineError(Exception):
    """Root of napari-sine's errors: the message names the problem and the fix."""


class InputError(SineError, ValueError):
    """A user input (image, labels, option, file) cannot be used."""


class PropagationError(InputError):
    """References or targets cannot be used as given; the message says what to change."""


class InputFileError(InputError):
    """An input file cannot be read as an image; the message names the file and the problem."""


class ConfigError(InputError):
    """A training configuration (TOML) is malformed: unknown key, wrong type or bad value."""


class CliError(InputError):
    """A command-line usage or input problem: reported as one message and exit status 2."""


class WeightsError(SineError, RuntimeError):
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
