"""Shared setup of the scale-out benchmarks (``bench/scale_rss.py``, ``bench/scale_throughput.py``).

The embedded model (offline, small) at P = 112 on 64×64 windows of the bundled sample targets, stored as a
zarr stack with one chunk per target (read lazily, one target at a time, by the workers); the bundled
reference (12 nuclei). Each measurement runs in a fresh process, writing one JSON line.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "## Scale-out: OME-Zarr output, resumable and distributed runs"
PAD = 112


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_target_stack(path: Path, count: int) -> Path:
    """``count`` 64×64 uint8 windows of the sample targets (most crowded first, cycling) as a zarr stack."""
    import zarr

    from sine_model import load_sample

    sample = load_sample()
    windows = sorted(((float((labels[y : y + 64, x : x + 64] > 0).mean()), k, y, x)
                      for k, labels in enumerate(sample.target_labels)
                      for y in range(0, labels.shape[0] - 64, 32)
                      for x in range(0, labels.shape[1] - 64, 32)), reverse=True)[:32]
    crops = np.stack([sample.targets[k][y : y + 64, x : x + 64] for _, k, y, x in windows])
    array = zarr.open_array(str(path), mode="w", shape=(count, 64, 64), chunks=(1, 64, 64), dtype=np.uint8)
    for start in range(0, count, 1024):
        stop = min(count, start + 1024)
        array[start:stop] = crops[np.arange(start, stop) % len(crops)]
    return path


def prepared_propagator(threads: int = 1):
    """The embedded model at P = 112 with the sample reference set, on ``threads`` torch threads."""
    import torch

    from sine_model import Propagator, from_pretrained, load_sample

    torch.set_num_threads(threads)
    sample = load_sample()
    propagator = Propagator(from_pretrained("sine-embedded"), "cpu", pad=PAD)
    propagator.set_references([(sample.reference, sample.reference_labels)])
    return propagator


def replace_block(name: str, text: str, path: Path = BENCHMARKS) -> None:
    """Put ``text`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` inside the scale-out section
    of ``path`` (appending the section or the block when missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    content = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in content and end in content:
        content = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, content, flags=re.S)
    elif SECTION in content:
        content = content.replace(SECTION, f"{SECTION}\n\n{block}", 1)
    else:
        content = content.rstrip() + f"\n\n{SECTION}\n\n{block}\n"
    path.write_text(content, encoding="utf-8")
