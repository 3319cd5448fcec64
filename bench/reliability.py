"""Run every reliability case (``tests/reliability/``, slow ones included) and write ``docs/reliability.md``.

Usage::

    .venv/bin/python bench/reliability.py            # all cases, then the table in docs/reliability.md
    .venv/bin/python bench/reliability.py -k files   # a subset (the doc is written only for a full run)

The cases run under pytest in this process with ``SINE_RELIABILITY_ALL=1`` (the slow ones — real
processes stopped by signals, the embedded model on the bundled sample — are skipped without it). Each
case's docstring says what was done and what must hold; the message the user got is what the case
recorded with ``record_property("message", ...)``. The table has one row per case: case, surface (the
test file: files, arrays, options, weights, stops, napari, properties), outcome, what was done and what
must hold, message. Exit status: pytest's (0 when every case passed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "reliability"
DOC = REPO / "docs" / "reliability.md"


def _commit() -> str:
    """The checked-out commit (and "+ changes" when the tree differs from it), or "unknown"."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + changes" if dirty else "")


class Collector:
    """A pytest plugin keeping each case's outcome, docstring and recorded message."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = {}
        self.docs: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
            self.docs[item.nodeid] = " ".join(doc.split())

    def pytest_runtest_logreport(self, report) -> None:
        row = self.rows.setdefault(report.nodeid, {"outcome": "not run", "message": ""})
        message = dict(report.user_properties).get("message", "")
        if message:
            row["message"] = message
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfail" if report.skipped else "XPASS"
            row["outcome"] = outcome
            if report.failed and not row["message"]:
                row["message"] = str(report.longrepr).strip().splitlines()[-1][:300]
            if report.skipped and not row["message"]:
                row["message"] = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else "")
        elif report.when == "teardown" and report.failed:
            row["outcome"] = "error"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _surface(nodeid: str) -> str:
    name = Path(nodeid.split("::")[0]).stem
    return name.removeprefix("test_reliability_")


def markdown(collector: Collector, seconds: float, command: str) -> str:
    rows = collector.rows
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    lines = [
        "# Reliability",
        "",
        "Bad or odd input, stops and failures, tried as a user would (issue 23). Every case states what",
        "was done and what must hold; this table is written by `bench/reliability.py` from one run of all",
        "of them (`tests/reliability/`; the fast ones also run in the normal test run, the slow ones",
        "only here or with `SINE_RELIABILITY_ALL=1`).",
        "",
        f"- run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {_commit()}, `{command}`, "
        f"{seconds:.0f} s wall "
        f"({platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; times depend on other "
        "load and are not a result)",
        f"- {len(rows)} cases: {summary}",
        "",
        "| case | surface | outcome | what was done → what must hold | message |",
        "|---|---|---|---|---|",
    ]
    for nodeid, row in sorted(rows.items(), key=lambda kv: (_surface(kv[0]), kv[0])):
        case = nodeid.split("::", 1)[1] if "::" in nodeid else nodeid
        lines.append(f"| `{_cell(case)}` | {_surface(nodeid)} | {row['outcome']} | "
                     f"{_cell(collector.docs.get(nodeid, ''))} | {_cell(row['message'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="keyword", help="run only the cases matching this pytest expression")
    parser.add_argument("--doc", type=Path, default=DOC, help="where to write the table")
    args = parser.parse_args(argv)
    os.environ["SINE_RELIABILITY_ALL"] = "1"
    collector = Collector()
    pytest_args = [str(CASES), "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO)]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    start = time.perf_counter()
    status = pytest.main(pytest_args, plugins=[collector])
    seconds = time.perf_counter() - start
    command = "python bench/reliability.py" + (f" -k {args.keyword}" if args.keyword else "")
    if args.keyword:
        print(markdown(collector, seconds, command))
        return int(status)
    args.doc.write_text(markdown(collector, seconds, command), encoding="utf-8")
    print(f"wrote {args.doc} ({len(collector.rows)} cases, pytest exit status {int(status)})")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
