"""The weights cache: DINOv2 from the hub or its cache (offline), atomic writes, cache folder choice.

Every checkpoint is synthetic and made in the test; the cache is a temporary folder (SINE_CACHE_DIR) and
any network access fails the test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file
from weights_helpers import ENC, assert_same_state, official_state, save, weights_files
from weights_helpers import isolated_fixture as isolated_fixture  # fixture `isolated`, autouse
from weights_helpers import tiny_fixture as tiny_fixture  # fixture `tiny`

from sine_model.hub import cache as weights_cache
from sine_model.hub import pretrained as W

# ----------------------------------------------------------------------------- hub, offline


def encoder_safetensors(model, path: Path) -> Path:
    encoder = {k[len(ENC) :]: v.contiguous() for k, v in model.state_dict().items() if k.startswith(ENC)}
    save_file(encoder, str(path))
    return path


def test_offline_and_missing_dinov2_fails_fast_with_steps(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights_cache, "_download_from_hub", lambda *a: pytest.fail("download attempted"))
    sine = save(official_state(encoder=False)[1], tmp_path / "sine.bin")
    # "fast" without a stopwatch (a machine's load would be measured too): the autouse `isolated` fixture
    # fails any network attempt, and nothing may wait (a retry loop, a back-off)
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    with pytest.raises(W.WeightsNotFoundError) as err:
        W.import_checkpoint(sine, preset=tiny.name)
    assert sleeps == []
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "--dinov2" in message
    assert "https://example.invalid/dinov2_tiny.pth" in message
    assert "https://huggingface.co/test/tiny-dinov2" in message
    assert weights_files(tmp_path) == []


def test_no_network_gives_steps(tiny, tmp_path, monkeypatch):
    # the real downloader, without network
    monkeypatch.setattr(weights_cache, "_hub_reachable", lambda timeout=5.0: False)
    sine = save(official_state(encoder=False)[1], tmp_path / "sine.bin")
    with pytest.raises(W.WeightsNotFoundError, match="(?s)download failed.*cannot be reached.*--dinov2"):
        W.import_checkpoint(sine, preset=tiny.name)
    with pytest.raises(W.WeightsNotFoundError, match="disabled"):
        W.import_checkpoint(sine, preset=tiny.name, allow_download=False)


def test_download_used_when_online(tiny, tmp_path, monkeypatch):
    model, sine = official_state(encoder=False)
    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return encoder_safetensors(model, tmp_path / "downloaded.safetensors")

    monkeypatch.setattr(weights_cache, "_download_from_hub", fake_download)
    installed = W.import_checkpoint(save(sine, tmp_path / "s.bin"), preset=tiny.name)
    assert calls == [("test/tiny-dinov2", "model.safetensors")]
    assert installed.record["encoder"]["origin"] == "hub"
    loaded = W.from_pretrained(tiny.name).state_dict()
    assert torch.equal(
        loaded[ENC + "blocks.1.attn.qkv.weight"], model.state_dict()[ENC + "blocks.1.attn.qkv.weight"]
    )


def test_hub_cache_used_offline_without_network(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights_cache, "_download_from_hub", lambda *a: pytest.fail("download attempted"))
    model, sine = official_state(encoder=False)
    repo = tmp_path / "hf" / "models--test--tiny-dinov2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    encoder_safetensors(model, repo / "snapshots" / "0123abcd" / "model.safetensors")
    installed = W.import_checkpoint(save(sine, tmp_path / "s.bin"), preset=tiny.name)
    assert installed.record["encoder"]["origin"] == "hub"
    assert_same_state(model, W.from_pretrained(tiny.name))


# ----------------------------------------------------------------------------- atomicity


def test_failed_write_leaves_cache_untouched(tiny, tmp_path, monkeypatch):
    model, state = official_state()
    first = W.import_checkpoint(save(state, tmp_path / "a.bin"), preset=tiny.name)

    def broken(tensors, path, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)  # fails while writing the temporary file
    with pytest.raises(OSError, match="disk full"):
        W.import_checkpoint(save(official_state(seed=1)[1], tmp_path / "b.bin"), preset=tiny.name)
    assert weights_files(tmp_path) == [f"{tiny.name}.json", f"{tiny.name}.safetensors"]
    assert W.verify_installed(tiny.name) == (True, first.sha256, first.sha256)
    assert_same_state(model, W.from_pretrained(tiny.name))


# ----------------------------------------------------------------------------- cache folder


def test_unwritable_sine_cache_dir_is_an_error(tiny, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(W.CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(W.WeightsError, match="SINE_CACHE_DIR=.*not a writable folder"):
        W.import_checkpoint(save(official_state()[1], tmp_path / "s.bin"), preset=tiny.name)


def test_read_only_default_cache_falls_back_with_warning(tiny, tmp_path, monkeypatch):
    import platformdirs

    blocker = tmp_path / "home-is-read-only"
    blocker.write_text("")
    monkeypatch.delenv(W.CACHE_ENV)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *a, **k: str(blocker / "cache"))
    monkeypatch.setattr(weights_cache, "_fallback_root", lambda: tmp_path / "fallback")
    model, state = official_state()
    with pytest.warns(UserWarning, match="not writable.*SINE_CACHE_DIR"):
        installed = W.import_checkpoint(save(state, tmp_path / "s.bin"), preset=tiny.name)
    assert installed.path.parent == tmp_path / "fallback" / "weights"
    assert_same_state(model, W.from_pretrained(tiny.name))
