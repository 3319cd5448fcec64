"""Shared fixtures and helpers of the weights tests (``test_weights*.py``, ``test_checkpoint_io.py``, …).

Import the fixtures into a test module to use them (``isolated_fixture``, autouse there, and
``tiny_fixture``); they are named ``isolated`` and ``tiny`` for the tests, so that test arguments do not
shadow the imports.

Every checkpoint is synthetic and made in the test; the cache is a temporary folder (SINE_CACHE_DIR)
and any network access fails the test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_ENCODER, TINY_KWARGS, build_tiny

from sine_model import ModelConfig
from sine_model.hub import pretrained as W
from sine_model.hub.presets import PRESETS, LicenceNotice, Preset, WeightSource

ENC = W.ENCODER_PREFIX


@pytest.fixture(autouse=True, name="isolated")
def isolated_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Temporary cache, empty Hugging Face cache, no network, fresh licence state."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(W, "_LICENCE_SHOWN", set())
    yield
    assert not attempts, f"a test tried to use the network: {attempts}"


def tiny_preset(name: str = "tiny-test", **changes: Any) -> Preset:
    """A preset of the tiny test architecture, with a URL source and a hub + URL DINOv2 source."""
    preset = Preset(
        name=name,
        description="tiny test preset",
        model=ModelConfig(kind=TINY_ENCODER, **TINY_KWARGS),
        weights=WeightSource("url", "https://example.invalid/tiny.bin", filename="tiny.bin"),
        encoder_weights=(
            WeightSource("hf_hub", "test/tiny-dinov2", filename="model.safetensors"),
            WeightSource("url", "https://example.invalid/dinov2_tiny.pth", key_format="meta"),
        ),
        licence=LicenceNotice("test licence", "TEST LICENCE NOTICE"),
    )
    return replace(preset, **changes)


@pytest.fixture(name="tiny")
def tiny_fixture(monkeypatch: pytest.MonkeyPatch) -> Preset:
    """:func:`tiny_preset`, registered for the test."""
    preset = tiny_preset()
    monkeypatch.setitem(PRESETS, preset.name, preset)
    return preset


def official_state(
    seed: int = 0, prefix: str = "", encoder: bool = True
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A tiny model's state dict in the official full format (with criterion.empty_weight)."""
    model = build_tiny(seed)
    with torch.no_grad():
        model.image_encoder.encoder.mask_token.normal_()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if not encoder:
        state = {k: v for k, v in state.items() if not k.startswith(ENC)}
    state["criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    return model, {prefix + k: v for k, v in state.items()}


def save(obj: Any, path: Path) -> Path:
    """``torch.save`` and return the path."""
    torch.save(obj, path)
    return path


def weights_files(tmp_path: Path) -> list[str]:
    """Names in the test cache's weights folder (temporary files included)."""
    folder = tmp_path / "cache" / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Same state-dict keys and bit-identical tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
