"""Opening the SINE dock widget in a fresh napari: how long napari's event loop stalls, and how much of
napari's canvas the dock leaves at napari's default window size.

Each run is a fresh interpreter on a virtual display: a viewer with the bundled sample, a 10 ms
``QTimer`` ticking, then Plugins ▸ SINE (``add_plugin_dock_widget``). Measured: the seconds inside that
call (the event loop cannot run meanwhile), the seconds until the model list is ready, the longest gap
between timer ticks while it loads (a worker thread reads it), the widget's minimum width, the dock's
width and the canvas width before and after docking. napari's settings and the widget's settings are
fresh in every run (temporary folders), so the window has napari's default size for the screen.

Usage (needs a display; on a headless machine under Xvfb, whose default screen is 1280×1024)::

    xvfb-run -a python bench/widget_open.py                      # this checkout, 3 runs
    xvfb-run -a python bench/widget_open.py --tree before=/tmp/old --tree after=.   # two checkouts

``--tree LABEL=PATH`` runs the code of another checkout (its ``napari_sine`` and ``sine_model`` first on
``PYTHONPATH``; the installed ``napari-sine`` distribution provides the plugin's entry point). The table
goes into the section "## Opening the dock widget" of docs/benchmarks.md (``--output -`` prints only).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_time import write_section  # noqa: E402  (one section writer for docs/benchmarks.md)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Opening the dock widget"

PROBE = r"""
import json, sys, time
import napari
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

def pump(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.005)

viewer = napari.Viewer(show=True)
from napari_sine._sample_data import nuclei_sample
for data, kwargs, kind in nuclei_sample():
    getattr(viewer, f"add_{kind}")(data, **kwargs)
pump(1.0)
window = viewer.window._qt_window
canvas = viewer.window._qt_viewer.canvas.native
before = {"window": [window.width(), window.height()], "canvas": canvas.width()}
gaps, last = [], [0.0]
def tick():
    now = time.perf_counter()
    gaps.append(now - last[0])
    last[0] = now
timer = QTimer()
timer.setInterval(10)
timer.timeout.connect(tick)
timer.start()
pump(0.2)
start = time.perf_counter()
last[0] = start
dock, widget = viewer.window.add_plugin_dock_widget("napari-sine", "SINE")
opened = time.perf_counter() - start
first = len(gaps)
deadline = time.monotonic() + 300
while getattr(widget.options, "loading", False) and time.monotonic() < deadline:
    QApplication.processEvents()
    time.sleep(0.002)
ready = time.perf_counter() - start
loading_gaps = gaps[first:]
pump(1.0)
print("PROBE=" + json.dumps({
    "open_s": opened, "ready_s": ready, "max_gap_s": max(loading_gaps, default=0.0),
    "widget_min_width": widget.minimumSizeHint().width(), "dock_width": dock.width(),
    "window": [window.width(), window.height()], "canvas_before": before["canvas"],
    "window_before": before["window"], "canvas_after": canvas.width(), "model": widget.options.model_name(),
}))
viewer.close()
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", metavar="LABEL=PATH",
                        help="checkout to measure (repeatable; default: this one, labelled 'this checkout')")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per checkout (default 3)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file; '-' prints only")
    return parser.parse_args(argv)


def probe(tree: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path, NAPARI_CONFIG=str(Path(tmp) / "napari.yaml"),
                   NAPARI_SINE_CONFIG_DIR=str(Path(tmp) / "cfg"), SINE_CACHE_DIR=str(Path(tmp) / "cache"),
                   HF_HUB_OFFLINE="1")
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                              cwd=tmp, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the probe failed in {tree} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("PROBE="))[6:])


def render(rows: list[tuple[str, list[dict]]], argv: list[str]) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        SECTION_TITLE,
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with "
        f"`xvfb-run -a python bench/widget_open.py{' ' + shlex.join(argv) if argv else ''}` "
        f"({os.cpu_count()} logical CPUs, load average {load} at the end; Xvfb screen 1280×1024). Medians "
        "of fresh processes; *stall* is the longest gap between 10 ms timer ticks while the model list "
        "loads (the open call itself is a stall of its whole length).",
        "",
        "| checkout | runs | open call s | model list ready s | longest stall while loading s "
        "| widget min width px | dock px | window px | canvas px before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for label, results in rows:
        keys = ("open_s", "ready_s", "max_gap_s", "widget_min_width", "dock_width", "canvas_before",
                "canvas_after")
        med = {key: statistics.median(r[key] for r in results) for key in keys}
        window = results[0]["window"]
        lines.append(
            f"| {label} | {len(results)} | {med['open_s']:.2f} | {med['ready_s']:.2f} "
            f"| {med['max_gap_s']:.2f} "
            f"| {med['widget_min_width']:.0f} | {med['dock_width']:.0f} | {window[0]}×{window[1]} "
            f"| {med['canvas_before']:.0f} → {med['canvas_after']:.0f} |"
        )
    lines += ["", "- Wall times depend on the machine's load; re-measure on a quiet machine before quoting "
              "them. Widths do not.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    trees = [tuple(t.split("=", 1)) for t in args.tree] if args.tree else [("this checkout", str(REPO_ROOT))]
    rows = []
    for label, path in trees:
        print(f"measuring {label} ({path}) …", file=sys.stderr, flush=True)
        rows.append((label, [probe(Path(path).resolve()) for _ in range(args.runs)]))
    section = render(rows, argv)
    print(section)
    if args.output != "-":
        write_section(Path(args.output), section)
        print(f"wrote the section '{SECTION_TITLE}' of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
