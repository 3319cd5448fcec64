"""Review state of a propagation run: per target proposed / accepted / corrected / skipped, with history.

A :class:`ReviewState` says, for every target of one run, what the user decided and who decided it when.
The plugin keeps it in the proposal layer's metadata (:meth:`ReviewState.to_dict`); command-line runs keep
it in a JSON sidecar next to the results (:data:`REVIEW_NAME`, :func:`write_review` / :func:`read_review`),
so a review can be saved and picked up later. The file is written atomically (temporary file renamed into
place) and checked when read: a damaged or foreign file raises :class:`ReviewFileError` naming the problem.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sine_model.errors import InputError

__all__ = [
    "REVIEW_NAME",
    "REVIEW_FORMAT",
    "STATUSES",
    "REVIEW_STATUSES",
    "ReviewError",
    "ReviewFileError",
    "ReviewEvent",
    "TargetReview",
    "ReviewState",
    "read_review",
    "write_review",
    "current_user",
]

#: The sidecar's file name inside a results folder.
REVIEW_NAME = "review.json"
#: Format tag written into (and required from) the sidecar.
REVIEW_FORMAT = "napari-sine-review/1"
#: The review states, in the order a target usually goes through them.
STATUSES: tuple[str, ...] = ("proposed", "accepted", "corrected", "skipped")
REVIEW_STATUSES = STATUSES  # the public API's name
#: States whose target goes into an exported dataset.
EXPORTED_STATUSES: tuple[str, ...] = ("accepted", "corrected")


class ReviewError(InputError):
    """A review decision that cannot be recorded (unknown target or state)."""


class ReviewFileError(InputError):
    """A review sidecar file that cannot be read (damaged, foreign or of another run)."""


def current_user() -> str:
    """The login name recorded as ``who`` when none is given ("unknown" when it cannot be found)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name on some containers
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ReviewEvent:
    """One decision: the new state, who made it and when (ISO 8601, UTC)."""

    status: str
    who: str
    when: str


@dataclass
class TargetReview:
    """The review of one target: its name, current state, optional corrected labels and its history.

    Parameters
    ----------
    index : int
        Target index in the run (the ``target`` column of ``scores.csv``).
    name : str
        A readable name (file stem or layer name and plane).
    status : str
        One of :data:`STATUSES`.
    labels : str, optional
        Where the corrected labels of a ``corrected`` target are (a path, for command-line reviews).
    history : list of ReviewEvent
        Every decision, oldest first.
    """

    index: int
    name: str
    status: str = "proposed"
    labels: str | None = None
    history: list[ReviewEvent] = field(default_factory=list)


class ReviewState:
    """The review of every target of one run.

    Parameters
    ----------
    targets : sequence of str
        Target names, in target order.
    run : dict, optional
        What identifies the run (e.g. results folder, target files); kept as is.
    """

    def __init__(self, targets: list[str] | tuple[str, ...], run: dict[str, Any] | None = None) -> None:
        self.targets = [TargetReview(i, str(name)) for i, name in enumerate(targets)]
        self.run = dict(run or {})

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> TargetReview:
        return self._target(index)

    def _target(self, index: int) -> TargetReview:
        if not 0 <= int(index) < len(self.targets):
            raise ReviewError(
                f"target {index} does not exist: this run has targets 0..{len(self.targets) - 1}"
            )
        return self.targets[int(index)]

    def set(
        self,
        index: int,
        status: str,
        *,
        who: str | None = None,
        when: str | None = None,
        labels: str | None = None,
    ) -> TargetReview:
        """Record a decision on target ``index`` (``labels``: where a correction is stored)."""
        if status not in STATUSES:
            raise ReviewError(f"unknown review state {status!r}: choose one of {', '.join(STATUSES)}")
        entry = self._target(index)
        entry.status = status
        entry.labels = labels if status == "corrected" else None
        entry.history.append(ReviewEvent(status, who or current_user(), when or _now()))
        return entry

    def indices(self, *statuses: str) -> list[int]:
        """Targets currently in one of ``statuses`` (default: accepted or corrected), in order."""
        wanted = statuses or EXPORTED_STATUSES
        return [t.index for t in self.targets if t.status in wanted]

    def counts(self) -> dict[str, int]:
        """How many targets are in each state."""
        return {s: sum(t.status == s for t in self.targets) for s in STATUSES}

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the sidecar and the layer metadata hold)."""
        return {
            "format": REVIEW_FORMAT,
            "run": self.run,
            "targets": [
                {
                    "index": t.index,
                    "name": t.name,
                    "status": t.status,
                    "labels": t.labels,
                    "history": [{"status": e.status, "who": e.who, "when": e.when} for e in t.history],
                }
                for t in self.targets
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "review") -> ReviewState:
        """Rebuild a state from :meth:`to_dict`'s output, checking every field.

        Raises
        ------
        ReviewFileError
            A field is missing or has the wrong type or value (``where`` names the source).
        """

        def fail(problem: str) -> ReviewFileError:
            return ReviewFileError(
                f"{where} is not a napari-sine review ({problem}); remove it to start the "
                "review again, or restore it from a backup"
            )

        if not isinstance(data, dict) or data.get("format") != REVIEW_FORMAT:
            raise fail(f"expected format {REVIEW_FORMAT!r}")
        rows, run = data.get("targets"), data.get("run", {})
        if not isinstance(rows, list) or not isinstance(run, dict):
            raise fail("'targets' must be a list and 'run' an object")
        state = cls([], run)
        for position, row in enumerate(rows):
            if not isinstance(row, dict) or row.get("index") != position:
                raise fail(f"target entry {position} is not an object with index {position}")
            status, name, labels = row.get("status"), row.get("name"), row.get("labels")
            if status not in STATUSES or not isinstance(name, str):
                raise fail(
                    f"target {position} has state {status!r} (one of {', '.join(STATUSES)}) and name {name!r}"
                )
            if labels is not None and not isinstance(labels, str):
                raise fail(f"target {position}'s labels must be a path or null")
            history = row.get("history", [])
            if not isinstance(history, list) or not all(
                isinstance(e, dict)
                and e.get("status") in STATUSES
                and isinstance(e.get("who"), str)
                and isinstance(e.get("when"), str)
                for e in history
            ):
                raise fail(f"target {position}'s history must be a list of {{status, who, when}}")
            events = [ReviewEvent(e["status"], e["who"], e["when"]) for e in history]
            state.targets.append(TargetReview(position, name, status, labels, events))
        return state


def write_review(state: ReviewState, path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` (a file, or a folder: then ``folder/review.json``) atomically."""
    path = Path(path)
    if path.is_dir():
        path = path / REVIEW_NAME
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(state.to_dict(), indent=1), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_review(path: str | os.PathLike[str]) -> ReviewState:
    """Read a review sidecar (a file, or a folder holding ``review.json``), checking it.

    Raises
    ------
    ReviewFileError
        The file is missing, is not JSON, or is not a napari-sine review.
    """
    path = Path(path)
    if path.is_dir():
        path = path / REVIEW_NAME
    if not path.is_file():
        raise ReviewFileError(f"{path} does not exist: run `napari-sine rank` on the results first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReviewFileError(
            f"{path} is not valid JSON ({exc}); remove it to start the review again"
        ) from None
    return ReviewState.from_dict(data, str(path))
