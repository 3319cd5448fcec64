"""The three answers of SINE and the options that name them: modes, thresholds, instance sources, classes.

Shared by the engine, the command line and the napari plugin, so that each is defined and parsed once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from sine_model.errors import InputError

__all__ = [
    "MODES",
    "INSTANCE_SOURCES",
    "SEMANTIC_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "parse_modes",
    "parse_classes",
    "check_thresholds",
]

#: ID (the same objects again), instance (every object of the referenced kinds), semantic (class regions).
MODES: tuple[str, ...] = ("id", "instance", "semantic")
#: Where instance proposals come from: SINE's instance queries, or the semantic answer split into objects.
INSTANCE_SOURCES: tuple[str, ...] = ("queries", "semantic")
#: The official semantic threshold (reference notes: the unnormalised class sum binarised at 0.7).
SEMANTIC_THRESHOLD: float = 0.7
#: Default per-mode score thresholds of the engine (objects scoring below are dropped).
DEFAULT_THRESHOLDS: Mapping[str, float] = {"id": 0.5, "instance": 0.5, "semantic": SEMANTIC_THRESHOLD}


def parse_modes(text: str | Iterable[str]) -> tuple[str, ...]:
    """Modes from ``"id,semantic"`` or an iterable, in the given order, duplicates dropped.

    Raises
    ------
    InputError
        For an unknown or empty selection.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    modes = tuple(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InputError(f"unknown mode(s) {bad or [text]}: use a comma-separated subset of "
                         f"{','.join(MODES)}")
    return modes


def parse_classes(text: str) -> dict[int, int]:
    """Parse ``LABEL:CLASS`` pairs (``"1:1, 2:1, 3:2"``; commas or semicolons); empty text gives ``{}``.

    Raises
    ------
    InputError
        For an item that is not two integers joined by ``:``, or a label or class below 1.
    """
    classes: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.replace(";", ",").split(","))):
        label, sep, cls = item.partition(":")
        try:
            if not sep:
                raise ValueError
            key, value = int(label), int(cls)
        except ValueError:
            raise InputError(f"classes: cannot read {item!r}; write LABEL:CLASS pairs such as "
                             "1:1,2:1,3:2") from None
        if key < 1 or value < 1:
            raise InputError(f"classes: {item!r} must use positive numbers (label ≥ 1, class ≥ 1)")
        classes[key] = value
    return classes


def check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """Validated per-mode score thresholds: known modes, finite numbers.

    Raises
    ------
    InputError
        For an unknown mode or a threshold that is not a finite number (NaN would silently drop every
        object).
    """
    checked: dict[str, float] = {}
    for mode, value in dict(thresholds or {}).items():
        if mode not in MODES:
            raise InputError(f"score threshold for unknown mode {mode!r}: modes are {', '.join(MODES)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"the {mode} score threshold must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InputError(f"the {mode} score threshold must be a finite number, got {value!r}")
        checked[mode] = number
    return checked
