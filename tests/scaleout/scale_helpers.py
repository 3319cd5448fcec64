"""Shared helpers of the resumable / distributed run tests: the embedded model on small targets.

(No ``conftest.py`` here: it would shadow ``tests/conftest.py``.) The embedded model runs offline; at
P = 112 a 64×64 target is one small model call, so a run of a dozen targets takes seconds on one core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sine_model import Propagator, from_pretrained, load_sample

PAD = 112


def sample_pair() -> tuple[np.ndarray, np.ndarray]:
    """The bundled reference and its labels (520×696, 12 nuclei)."""
    sample = load_sample()
    return sample.reference, sample.reference_labels


def small_targets(count: int) -> np.ndarray:
    """``count`` 64×64 windows of the bundled targets (uint8), most crowded with nuclei first, cycling."""
    sample = load_sample()
    windows = sorted(((float((labels[y : y + 64, x : x + 64] > 0).mean()), k, y, x)
                      for k, labels in enumerate(sample.target_labels)
                      for y in range(0, labels.shape[0] - 64, 32)
                      for x in range(0, labels.shape[1] - 64, 32)),
                     reverse=True)[:32]
    crops = [sample.targets[k][y : y + 64, x : x + 64] for _, k, y, x in windows]
    return np.stack([crops[i % len(crops)] for i in range(count)])


def prepared_propagator(**options) -> Propagator:
    """The embedded model at P = 112 with the sample references set (one torch thread: the workers')."""
    torch.set_num_threads(1)
    propagator = Propagator(from_pretrained("sine-embedded"), "cpu", pad=PAD, **options)
    propagator.set_references([sample_pair()])
    return propagator


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name → bytes): two runs are identical when these are equal."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}
