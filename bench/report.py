"""The harness's report: per-dataset means, the markdown section of ``docs/quality.md``, the machine."""

from __future__ import annotations

import os
import platform
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["SECTION", "machine_description", "markdown", "summarise", "write_section"]

SECTION = "## One-shot evaluation"


def _mean(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def summarise(records: Sequence[dict]) -> list[dict]:
    """Per (dataset, method) means over pairs, then a ``mean`` row per method over datasets."""
    rows = []
    methods = list(dict.fromkeys(r["method"] for r in records))
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    for dataset in datasets:
        for method in methods:
            pairs = [r for r in records if r["dataset"] == dataset and r["method"] == method
                     and r["kind"] == "pair"]
            crops = [r for r in records if r["dataset"] == dataset and r["method"] == method
                     and r["kind"] == "id_crop"]
            if not pairs:
                continue
            found, total = sum(r["n_found"] for r in crops), sum(r["n_ids"] for r in crops)
            rows.append(dict(dataset=dataset, method=method, pairs=len(pairs),
                             semantic_iou=_mean(r["semantic_iou"] for r in pairs),
                             f1=_mean(r["f1"] for r in pairs), precision=_mean(r["precision"] for r in pairs),
                             recall=_mean(r["recall"] for r in pairs),
                             id_score=found / total if total else float("nan"),
                             seconds_per_target=_mean(r["predict_s"] for r in pairs)))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        rows.append(dict(dataset="mean", method=method, pairs=sum(r["pairs"] for r in mine),
                         **{k: _mean(r[k] for r in mine) for k in ("semantic_iou", "f1", "precision",
                                                                  "recall", "id_score",
                                                                  "seconds_per_target")}))
    return rows


def _fmt(value: float) -> str:
    return "—" if value is None or np.isnan(value) else f"{value:.3f}"


def markdown(rows: Sequence[dict], command: str, meta: dict) -> str:
    """The results section: table, command, date and machine."""
    lines = [SECTION, "", f"Command: `{command}`", "",
             f"Date: {meta['date']} · machine: {meta['machine']} · model: {meta['model']}"
             + "".join(f" · {name}: {a['mean_steps']:.0f} adaptation steps per reference on average"
                       for name, a in meta.get("adapt", {}).items())
             + "".join(f" · {name}: calibrated scales " + ", ".join(
                 f"{scale:g} ×{n}" for scale, n in sorted(Counter(c["scale"] for c in cals if c).items()))
                 + f", reference projection ×{sum(bool(c and c.get('projection')) for c in cals)}"
                 + f", not calibrated ×{sum(c is None for c in cals)}"
                       for name, cals in meta.get("calibration", {}).items())
             + "".join(f" · {name}: refiner {f['mean_steps']:.0f} steps per reference on average, trained on "
                       f"held-out halves ×{f['held_out']} and whole references ×{f['whole']}"
                       for name, f in meta.get("refine", {}).items()),
             "",
             "| dataset | method | pairs | semantic IoU | instance F1@0.5 | precision | recall | ID score "
             "| s/target |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"**{r['dataset']}**" if r["dataset"] == "mean" else r["dataset"]
        lines.append(f"| {name} | {r['method']} | {r['pairs']} | {_fmt(r['semantic_iou'])} | {_fmt(r['f1'])} "
                     f"| {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['id_score'])} "
                     f"| {r['seconds_per_target']:.2f} |")
    groups = ", ".join(meta["dsb_groups"])
    lines += ["", f"Protocol: `bench/evaluate.py` docstring. DSB2018 groups: {groups}. "
              "Means are over pairs within a dataset and over datasets in the mean rows; the ID score "
              "(crop pairs) exists only for the model.", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str, section: str = SECTION) -> None:
    """Replace ``section`` (a ``## `` title; :data:`SECTION` by default) of a markdown file with ``text``
    (append it when absent)."""
    path = Path(path)
    old = path.read_text() if path.exists() else "# Quality\n"
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + [""] + lines[end:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new.rstrip("\n") + "\n")


def machine_description(device: str | None = None) -> str:
    """OS, CPU model and cores, and the accelerator when one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"
    if device and device.startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name()}"
    return text
