"""Weights import and load round trips: hashes, presets, licence notice, identical models.

Every checkpoint is synthetic and made in the test; the cache is a temporary folder (SINE_CACHE_DIR) and
any network access fails the test.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import TINY_P, rect_mask
from safetensors.torch import save_file
from weights_helpers import assert_same_state, official_state, save, tiny_preset, weights_files
from weights_helpers import isolated_fixture as isolated_fixture  # fixture `isolated`, autouse
from weights_helpers import tiny_fixture as tiny_fixture  # fixture `tiny`

from sine_model import ModelConfig, build_sine
from sine_model.hub import pretrained as W
from sine_model.hub.presets import PRESETS, LicenceNotice, WeightSource

# ----------------------------------------------------------------------------- hashes, presets


def test_hash_mismatch_detected(tiny, tmp_path):
    installed = W.import_checkpoint(save(official_state()[1], tmp_path / "s.bin"), preset=tiny.name)
    data = bytearray(installed.path.read_bytes())
    data[-5] ^= 0xFF
    installed.path.write_bytes(bytes(data))
    with pytest.raises(W.HashMismatchError, match="(?i)was recorded.*import it again"):
        W.from_pretrained(tiny.name)
    assert W.verify_installed(tiny.name)[0] is False
    installed.path.with_suffix(".json").unlink()
    with pytest.raises(W.HashMismatchError, match="no import record"):
        W.from_pretrained(tiny.name)


def test_published_hash_checked_on_import(tmp_path, monkeypatch):
    preset = tiny_preset(weights=WeightSource("url", "https://example.invalid/x", sha256="0" * 64))
    monkeypatch.setitem(PRESETS, preset.name, preset)
    with pytest.raises(W.HashMismatchError, match="is published"):
        W.import_checkpoint(save(official_state()[1], tmp_path / "s.bin"), preset=preset.name)
    assert weights_files(tmp_path) == []


def test_safetensors_of_another_preset(tiny, tmp_path, monkeypatch):
    other = tiny_preset(name="tiny-other")
    monkeypatch.setitem(PRESETS, other.name, other)
    model, state = official_state()
    mine = W.import_checkpoint(save(state, tmp_path / "s.bin"), preset=tiny.name)
    with pytest.raises(W.PresetMismatchError, match="of preset 'tiny-test', not 'tiny-other'"):
        W.import_checkpoint(mine.path, preset=other.name)
    # a file copied into another preset's slot (with a consistent record) is still refused
    folder = mine.path.parent
    (folder / "tiny-other.safetensors").write_bytes(mine.path.read_bytes())
    (folder / "tiny-other.json").write_text(json.dumps({"sha256": mine.sha256}))
    with pytest.raises(W.PresetMismatchError, match="not 'tiny-other'"):
        W.from_pretrained(other.name)
    assert_same_state(model, W.from_pretrained(mine.path))  # a path load uses the file's own preset


def test_not_installed_and_unknown(tiny, tmp_path):
    with pytest.raises(
        W.WeightsNotFoundError, match="(?s)not installed.*example.invalid/tiny.bin.*weights import"
    ):
        W.from_pretrained(tiny.name)
    with pytest.raises(W.WeightsNotFoundError, match="neither a registered preset"):
        W.from_pretrained("no-such-preset")
    unnamed = tmp_path / "plain.safetensors"
    save_file({"a": torch.ones(1)}, str(unnamed))
    with pytest.raises(W.PresetMismatchError, match="which preset"):
        W.from_pretrained(unnamed)


# ----------------------------------------------------------------------------- licence


def test_licence_notice_printed_once(tmp_path, monkeypatch, capsys):
    preset = tiny_preset(licence=LicenceNotice("academic", "TEST LICENCE NOTICE", show_on_first_load=True))
    monkeypatch.setitem(PRESETS, preset.name, preset)
    W.import_checkpoint(save(official_state()[1], tmp_path / "s.bin"), preset=preset.name)
    capsys.readouterr()
    W.from_pretrained(preset.name)
    assert "TEST LICENCE NOTICE" in capsys.readouterr().err
    W.from_pretrained(preset.name)
    monkeypatch.setattr(W, "_LICENCE_SHOWN", set())  # a new process: the marker in the cache remains
    W.from_pretrained(preset.name)
    assert "TEST LICENCE NOTICE" not in capsys.readouterr().err
    assert (tmp_path / "cache" / "weights" / f".licence-shown-{preset.name}").exists()


def test_no_notice_for_presets_without_one(tiny, tmp_path, capsys):
    W.import_checkpoint(save(official_state()[1], tmp_path / "s.bin"), preset=tiny.name)
    W.from_pretrained(tiny.name)
    assert "LICENCE" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- round trip


def test_vits_official_checkpoint_round_trip(tmp_path, monkeypatch):
    """A vits-sized full-format official checkpoint → cache → identical model and outputs."""
    preset = tiny_preset(name="sine-vits-test", model=ModelConfig(kind="vits"))
    monkeypatch.setitem(PRESETS, preset.name, preset)
    torch.manual_seed(0)
    original = build_sine("vits").eval()
    state = {"module." + k: v for k, v in original.state_dict().items()}
    state["module.criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    source = save(state, tmp_path / "pytorch_model.bin")
    del state
    installed = W.import_checkpoint(source, preset=preset.name)
    assert installed.size_bytes > 100e6
    loaded = W.from_pretrained(preset.name)
    assert not loaded.training
    assert_same_state(original, loaded)
    assert not any(p.requires_grad for p in loaded.image_encoder.encoder.parameters())

    generator = torch.Generator().manual_seed(3)
    p = TINY_P
    refs = torch.randn(1, 3, p, p, generator=generator)
    target = torch.randn(1, 3, p, p, generator=generator)
    masks = [torch.stack([rect_mask(p, 10, 10, 40, 30), rect_mask(p, 60, 50, 30, 40)])]
    labels, ids = [torch.tensor([1, 2])], [torch.tensor([4, 7])]
    with torch.no_grad():
        expected = original.forward_raw(refs, masks, labels, ids, target)
        actual = loaded.forward_raw(refs, masks, labels, ids, target)
    # Equal weights give equal outputs up to float rounding: the mask head's folded matmul
    # (modeling/mask_folding.py) may sum in another order for another buffer (1.5e-8 measured).
    for key in ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks"):
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_preset_build_random_and_from_pretrained_device(tiny, tmp_path):
    model = tiny.build()
    assert model.preset is None  # random weights: no preset's conventions claimed
    assert W.expected_shapes(tiny).keys() == model.state_dict().keys()
    W.import_checkpoint(save(official_state()[1], tmp_path / "s.bin"), preset=tiny.name)
    loaded = W.from_pretrained(tiny.name, device=torch.device("cpu"))
    assert next(loaded.parameters()).device.type == "cpu"
    assert os.environ[W.CACHE_ENV] in str(W.installed_weights(tiny.name).path)
