"""Shared fixtures: a tiny SINE configuration and inputs (CPU, seconds, no downloads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from sine_model import EncoderConfig, build_sine

TINY_ENCODER = EncoderConfig("tiny", embed_dim=32, depth=2, num_heads=2)
TINY_KWARGS = dict(dim=32, num_heads=4, ffn_dim=64, num_decoder_layers=3, num_queries=10)
TINY_P = 112  # 8×8 grid, 32×32 mask features


def build_tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_sine(TINY_ENCODER, **TINY_KWARGS).eval()


def build_embedded(kind: str = "cnn", **overrides):
    """A random embedded-architecture model: the embedded preset's ModelConfig with ``kind`` and overrides."""
    from dataclasses import replace

    from sine_model import EMBEDDED_PRESET, build_model, get_preset

    for name in ("channels", "sigmas"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    return build_model(replace(get_preset(EMBEDDED_PRESET).model, kind=kind, **overrides))


def rect_mask(side: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    mask = torch.zeros(side, side, dtype=torch.bool)
    mask[top : top + height, left : left + width] = True
    return mask


def disk_scene(seed: int, shape=(96, 96), radius=7, count=10):
    """Bright touching-free disks on a noisy dark background; returns (uint8 grey image, labels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for value in range(1, count + 1):
        cy, cx = rng.integers(radius, shape[0] - radius, size=2)
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (labels == 0)
        labels[disk] = value
    image = np.where(labels > 0, 170, 60) + rng.normal(0, 12, shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    """``napari-sine ARGV`` in this process (the CLI and reliability tests): exit status, stdout, stderr."""
    from sine_model import cli

    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``count`` inside, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Run the test on one torch thread, restoring the thread count afterwards."""
    with torch_threads(1):
        yield


@pytest.fixture
def tiny_model():
    return build_tiny()


@pytest.fixture
def tiny_inputs():
    """Two references (2 + 1 masks; ids 3, 5 and 3 again; labels 1, 2, 1) and one target."""
    generator = torch.Generator().manual_seed(1)
    p = TINY_P
    ref_images = torch.randn(2, 3, p, p, generator=generator)
    target = torch.randn(1, 3, p, p, generator=generator)
    masks = [
        torch.stack([rect_mask(p, 10, 10, 20, 20), rect_mask(p, 50, 40, 30, 50)]),
        torch.stack([rect_mask(p, 5, 5, 55, 15)]),
    ]
    labels = [torch.tensor([1, 2]), torch.tensor([1])]
    ids = [torch.tensor([3, 5]), torch.tensor([3])]
    return ref_images, masks, labels, ids, target
