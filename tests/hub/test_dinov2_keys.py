"""DINOv2 encoder filling: Meta, timm and Hugging Face names mapped onto SINE's encoder.

Every checkpoint is synthetic and made in the test; the cache is a temporary folder (SINE_CACHE_DIR) and
any network access fails the test.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TINY_ENCODER, TINY_KWARGS
from safetensors.torch import save_file
from weights_helpers import ENC, assert_same_state, official_state, save
from weights_helpers import isolated_fixture as isolated_fixture  # fixture `isolated`, autouse
from weights_helpers import tiny_fixture as tiny_fixture  # fixture `tiny`

from sine_model import build_sine
from sine_model.hub import pretrained as W

# ----------------------------------------------------------------------------- DINOv2 filling


def to_hf_names(encoder: dict) -> dict:
    """Official DINOv2 names → Hugging Face transformers names (written independently of the module)."""
    out = {}
    for key, value in encoder.items():
        block = re.match(r"blocks\.(\d+)\.(.*)", key)
        if not block:
            simple = {
                "cls_token": "embeddings.cls_token",
                "mask_token": "embeddings.mask_token",
                "pos_embed": "embeddings.position_embeddings",
            }
            if key in simple:
                out[simple[key]] = value
            elif key.startswith("patch_embed.proj."):
                out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
            else:
                out["layernorm." + key.rsplit(".", 1)[1]] = value
            continue
        index, rest = block.groups()
        base = f"encoder.layer.{index}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{base}attention.attention.{part}.{kind}"] = chunk.clone()
        else:
            rest = rest.replace("attn.proj.", "attention.output.dense.")
            rest = rest.replace("ls1.gamma", "layer_scale1.lambda1").replace(
                "ls2.gamma", "layer_scale2.lambda1"
            )
            out[base + rest] = value
    return out


@pytest.mark.parametrize("naming", ["meta", "timm", "hf", "hf-prefixed"])
def test_encoder_filled_from_dinov2_file(tiny, tmp_path, naming):
    model, sine = official_state(encoder=False)
    encoder = {k[len(ENC) :]: v for k, v in model.state_dict().items() if k.startswith(ENC)}
    if naming == "timm":
        encoder = {k: v for k, v in encoder.items() if k != "mask_token"}
    if naming.startswith("hf"):
        encoder = to_hf_names(encoder)
        if naming == "hf-prefixed":
            encoder = {"dinov2." + k: v for k, v in encoder.items()}
        dinov2 = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in encoder.items()}, str(dinov2))
    else:
        dinov2 = save(encoder, tmp_path / "dinov2.pth")
    installed = W.import_checkpoint(save(sine, tmp_path / "sine.bin"), dinov2_file=dinov2, preset=tiny.name)
    assert installed.record["encoder"]["origin"] == "file"
    assert installed.record["encoder"]["key_format"] == ("hf" if naming.startswith("hf") else "meta")
    loaded = W.from_pretrained(tiny.name).state_dict()
    for key, value in model.state_dict().items():
        if naming == "timm" and key == ENC + "mask_token":
            assert torch.equal(loaded[key], torch.zeros_like(value))  # unused at inference
        else:
            assert torch.equal(loaded[key], value), key


def test_wrong_dinov2_file_lists_keys(tiny, tmp_path):
    _, sine = official_state(encoder=False)
    other = build_sine(TINY_ENCODER.__class__("other", 48, 1, 2), **TINY_KWARGS)
    encoder = {k[len(ENC) :]: v for k, v in other.state_dict().items() if k.startswith(ENC)}
    with pytest.raises(W.KeyMismatchError, match=r"(?s)DINOv2 file.*missing.*blocks\.1\..*wrong shape"):
        W.import_checkpoint(
            save(sine, tmp_path / "s.bin"), dinov2_file=save(encoder, tmp_path / "d.pth"), preset=tiny.name
        )


def test_sine_file_with_encoder_ignores_dinov2(tiny, tmp_path):
    model, state = official_state()
    installed = W.import_checkpoint(
        save(state, tmp_path / "s.bin"), dinov2_file=tmp_path / "unused.pth", preset=tiny.name
    )
    assert any("--dinov2 was not used" in note for note in installed.record["notes"])
    assert_same_state(model, W.from_pretrained(tiny.name))
