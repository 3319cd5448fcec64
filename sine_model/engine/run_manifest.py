"""The manifest of a resumable run: what was asked (identity) and which targets are finished.

``sine-run.json`` in the output directory holds

* ``identity``: the inputs (files' sizes and hashes, shapes), the references' checksums, the model and
  its weights' sha256, fingerprints of the prepared model, references and refiner, every option that
  shapes the results, the package version. A run resumes only into the same identity;
* ``finished``: the finished targets as sorted, disjoint ``[start, stop)`` ranges (a handful when targets
  finish in order, so the file stays small for a million targets);
* ``complete``: whether ``scores.csv`` was assembled.

It is rewritten after every finished target through a temporary file renamed into place and flushed to
disk, so a crash leaves the previous version or the new one. It holds no time stamps or process ids:
an interrupted and resumed run ends with the same manifest as an uninterrupted one.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sine_model.errors import InputError
from sine_model.io.target_records import MANIFEST_NAME, atomic_write_text

__all__ = ["FinishedTargets", "MANIFEST_FORMAT", "RunManifest", "RunStateError", "differences"]

MANIFEST_FORMAT = 1


class RunStateError(InputError):
    """A run in an output directory cannot be resumed as asked (changed inputs or options, damaged)."""


class FinishedTargets:
    """A set of target indices kept as sorted, disjoint, non-adjacent ``[start, stop)`` ranges."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        for start, stop in sorted((int(a), int(b)) for a, b in ranges):  # (from a file: checked, merged)
            if start < 0 or stop <= start:
                raise ValueError(f"bad range [{start}, {stop})")
            if self._stops and start <= self._stops[-1]:
                self._stops[-1] = max(self._stops[-1], stop)
            else:
                self._starts.append(start)
                self._stops.append(stop)

    def __contains__(self, index: int) -> bool:
        at = bisect.bisect_right(self._starts, index) - 1
        return at >= 0 and index < self._stops[at]

    def __len__(self) -> int:
        return sum(b - a for a, b in zip(self._starts, self._stops, strict=True))

    def add(self, index: int) -> None:
        """Mark ``index`` finished."""
        if index in self:
            return
        at = bisect.bisect_right(self._starts, index)
        joins_left = at > 0 and self._stops[at - 1] == index
        joins_right = at < len(self._starts) and self._starts[at] == index + 1
        if joins_left and joins_right:
            self._stops[at - 1] = self._stops[at]
            del self._starts[at], self._stops[at]
        elif joins_left:
            self._stops[at - 1] = index + 1
        elif joins_right:
            self._starts[at] = index
        else:
            self._starts.insert(at, index)
            self._stops.insert(at, index + 1)

    def discard(self, index: int) -> None:
        """Mark ``index`` not finished."""
        if index not in self:
            return
        at = bisect.bisect_right(self._starts, index) - 1
        start, stop = self._starts[at], self._stops[at]
        del self._starts[at], self._stops[at]
        for a, b in ((index + 1, stop), (start, index)):  # right piece first: inserted at the same place
            if a < b:
                self._starts.insert(at, a)
                self._stops.insert(at, b)

    def __iter__(self) -> Iterator[int]:
        for start, stop in zip(self._starts, self._stops, strict=True):
            yield from range(start, stop)

    def missing(self, n_targets: int) -> list[int]:
        """The indices below ``n_targets`` not finished, in order."""
        missing, previous = [], 0
        for start, stop in zip([*self._starts, n_targets], [*self._stops, n_targets], strict=True):
            missing.extend(range(previous, min(start, n_targets)))
            previous = max(previous, stop)
        return missing

    def ranges(self) -> list[list[int]]:
        """The ``[start, stop)`` ranges."""
        return [[a, b] for a, b in zip(self._starts, self._stops, strict=True)]


@dataclass
class RunManifest:
    """The contents of ``sine-run.json`` (see the module docstring)."""

    identity: dict[str, Any]
    n_targets: int
    finished: FinishedTargets = field(default_factory=FinishedTargets)
    complete: bool = False

    def to_json(self) -> str:
        return json.dumps({"format": MANIFEST_FORMAT, "n_targets": self.n_targets, "complete": self.complete,
                           "finished": self.finished.ranges(), "identity": self.identity},
                          indent=1, sort_keys=True) + "\n"

    def save(self, out_dir: str | Path) -> None:
        """Write the manifest atomically (temporary file, flushed to disk, renamed into place)."""
        atomic_write_text(Path(out_dir) / MANIFEST_NAME, self.to_json(), fsync=True)

    @classmethod
    def load(cls, out_dir: str | Path) -> RunManifest | None:
        """The manifest in ``out_dir``, or None when there is none.

        Raises
        ------
        RunStateError
            When the file exists but cannot be read (damaged, or from another version).
        """
        path = Path(out_dir) / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_FORMAT}")
            n_targets = int(data["n_targets"])
            finished = FinishedTargets(data["finished"])
            manifest = cls(dict(data["identity"]), n_targets, finished, bool(data["complete"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunStateError(f"the run manifest {path} is damaged ({exc}), so the run in {path.parent} "
                                "cannot be resumed: pass --restart to discard its results and start over"
                                ) from exc
        if finished.ranges() and finished.ranges()[-1][1] > n_targets:
            raise RunStateError(f"the run manifest {path} marks targets beyond its {n_targets}: it is "
                                "damaged; pass --restart to start over")
        return manifest


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 8) -> list[str]:
    """Human-readable differences between two identities (``key: old -> new``), at most ``limit``."""
    a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
    found = [f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}"
             for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])
