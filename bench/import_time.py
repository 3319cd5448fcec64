"""Import time of the entry points a user meets first: ``import napari_sine``, ``import sine_model``,
``napari-sine --help`` (budget: 1.5 s each, after a warm-up run), and what the dock widget's module adds
once napari is loaded.

Every measurement is a fresh interpreter run with ``python -X importtime`` (for the console script:
``PYTHONPROFILEIMPORTTIME=1``). One warm-up run per case is discarded (it fills the OS file cache and
writes ``__pycache__``), then ``--repeats`` runs give the median and range of the whole process's wall
time and CPU time (user + system of the child). ``-X importtime`` also gives the import time of our own
packages (the cumulative time of their top-level import lines, in ms) and which heavy packages were
loaded at all; that column depends far less on the machine's load than wall time.

Usage::

    python bench/import_time.py                      # print and write the section of docs/benchmarks.md
    python bench/import_time.py --repeats 11 --output -

The code measured is this checkout's (``PYTHONPATH`` is set to the repository root); the console script
is the ``napari-sine`` next to the interpreter.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Import time"
BUDGET_S = 1.5
OUR_PACKAGES = ("sine_model", "napari_sine")
HEAVY = ("torch", "torchvision", "timm", "scipy", "skimage", "pandas", "napari", "PyQt6", "numpy")


@dataclass(frozen=True)
class Case:
    """One thing to time: a command line, and whether the budget applies to it."""

    name: str
    argv: list[str]
    budget: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Runs:
    """What the timed runs of one case measured."""

    case: Case
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    ours_ms: list[float] = field(default_factory=list)
    heavy: set[str] = field(default_factory=set)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case (default: %(default)s)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="markdown file whose section is written; '-' prints only")
    return parser.parse_args(argv)


def console_script() -> str:
    """The ``napari-sine`` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "napari-sine"
    if not script.exists():
        raise SystemExit(f"{script} not found: install napari-sine into this environment (pip install -e .)")
    return str(script)


def cases() -> list[Case]:
    py = [sys.executable, "-X", "importtime"]
    return [
        Case("interpreter start-up (for comparison)", [*py, "-c", "pass"]),
        Case("`import napari_sine`", [*py, "-c", "import napari_sine"], budget=True),
        Case("`import sine_model`", [*py, "-c", "import sine_model"], budget=True),
        Case("`napari-sine --help`", [console_script(), "--help"], budget=True,
             env={"PYTHONPROFILEIMPORTTIME": "1"}),
        Case("the widget's module, napari already loaded",
             [*py, "-c", "import napari.qt, napari.layers; import napari_sine._qt.widget"]),
        Case("`import torch` (for comparison)", [*py, "-c", "import torch"]),
    ]


def parse_importtime(stderr: str) -> tuple[float, set[str]]:
    """(ms spent importing our packages, heavy top-level packages imported) from ``-X importtime``."""
    ours_us, heavy = 0.0, set()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if not cumulative.strip().isdigit():
            continue  # the header line
        top = name.strip().split(".")[0]
        if top in HEAVY:
            heavy.add(top)
        indent = len(name) - len(name.lstrip()) - 1  # one space after "|", then two per nesting level
        if indent == 0 and top in OUR_PACKAGES:
            ours_us += float(cumulative)
    return ours_us / 1000, heavy


def run_once(case: Case) -> tuple[float, float, float, set[str]]:
    env = dict(os.environ, **case.env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(case.argv, env=env, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{case.name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ours, heavy = parse_importtime(done.stderr)
    return wall, cpu, ours, heavy


def measure(case: Case, repeats: int) -> Runs:
    run_once(case)  # warm-up, discarded
    runs = Runs(case)
    for _ in range(repeats):
        wall, cpu, ours, heavy = run_once(case)
        runs.wall.append(wall)
        runs.cpu.append(cpu)
        runs.ours_ms.append(ours)
        runs.heavy |= heavy
    return runs


def render_section(results: list[Runs], repeats: int, argv: list[str]) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        SECTION_TITLE,
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`python bench/import_time.py{' ' + shlex.join(argv) if argv else ''}`: {platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}, load average {load} at the "
        f"end. Each row: one discarded warm-up run, then {repeats} fresh processes; wall and CPU are of the "
        "whole process (interpreter start-up included); *ours* is `-X importtime`'s cumulative time of "
        "the `sine_model` / `napari_sine` imports (with whatever they load); budget: "
        f"{BUDGET_S} s wall per entry point.",
        "",
        "| what | wall median s (min–max) | CPU median s | ours ms (median) | heavy packages loaded "
        "| budget |",
        "|---|---:|---:|---:|---|---|",
    ]
    for runs in results:
        wall = statistics.median(runs.wall)
        verdict = ("met" if wall <= BUDGET_S else "**missed**") if runs.case.budget else ""
        heavy = ", ".join(sorted(runs.heavy)) or "none"
        lines.append(
            f"| {runs.case.name} | {wall:.2f} ({min(runs.wall):.2f}–{max(runs.wall):.2f}) | "
            f"{statistics.median(runs.cpu):.2f} | {statistics.median(runs.ours_ms):.0f} | {heavy} | "
            f"{verdict} |"
        )
    lines += [
        "",
        "- torch, scipy, scikit-image and pandas load when a model, the engine or the fitting stages are "
        "first used (the public API of `sine_model` is lazy; every `napari-sine` subcommand imports them in "
        "its handler); the widget's model list and devices are read in a worker thread after it opens. "
        "`tests/architecture/test_light_imports.py` checks that these entry points do not import torch.",
        "- The widget's row times a process that imports napari first: its wall and CPU columns are mostly "
        "napari's; the widget module's own share is *ours* (torch is not among what it loads).",
        "- Wall time depends on the machine's load; re-measure on a quiet machine before quoting it.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the section with the same title (its first line, up to the next ``## `` heading) or append
    it."""
    title = section.splitlines()[0].rstrip()
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == title), None)
    block = section if section.endswith("\n") else section + "\n"
    if start is None:
        lines.append(("\n" if text.endswith("\n") else "\n\n") + block)
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = [block] + (["\n"] if end < len(lines) else [])
    path.write_text("".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    results = []
    for case in cases():
        print(f"timing {case.name} …", file=sys.stderr, flush=True)
        results.append(measure(case, args.repeats))
    section = render_section(results, args.repeats, argv)
    print(section)
    if args.output != "-":
        write_section(Path(args.output), section)
        print(f"wrote the section '{SECTION_TITLE}' of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
