"""DINOv2 state-dict names: Meta, timm and Hugging Face transformers, mapped to the official names.

SINE's image encoder is the official DINOv2 ViT (``image_encoder.encoder.<official name>``). Meta's
``.pth`` files and timm use those names already; Hugging Face ``Dinov2Model`` files use their own names
and separate ``query``/``key``/``value`` projections, which are fused into ``qkv`` here.
:func:`encoder_from_dinov2` fills the encoder of a SINE checkpoint that lacks it, from a given file or
from the Hugging Face cache or hub.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sine_model.errors import KeyMismatchError
from sine_model.hub.cache import fetch_dinov2
from sine_model.hub.checkpoint_io import (
    WRAPPER_PREFIXES,
    check_state_dict,
    read_state_dict,
    sha256_file,
    strip_prefixes,
)
from sine_model.hub.presets import Preset

__all__ = [
    "DINOV2_PREFIXES",
    "ENCODER_PREFIX",
    "convert_dinov2_state_dict",
    "dinov2_key_format",
    "encoder_from_dinov2",
]

ENCODER_PREFIX = "image_encoder.encoder."
DINOV2_PREFIXES = (*WRAPPER_PREFIXES, "teacher.", "backbone.", "dinov2.", ENCODER_PREFIX)
_OPTIONAL_ENCODER_KEYS = ("mask_token",)  # unused at inference; timm files do not carry it

# Hugging Face transformers Dinov2Model → official DINOv2 names. Hub files use the v4 names
# (``attention.attention.query``, ``attention.output.dense``); transformers 5 modules name them
# ``attention.q_proj`` … ``attention.o_proj``. Both are accepted.
_HF_RENAMES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.mask_token", "mask_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (
        r"encoder\.layer\.(\d+)\.attention\.(?:output\.dense|o_proj)\.(weight|bias)",
        r"blocks.\1.attn.proj.\2",
    ),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
)
_HF_QKV = re.compile(
    r"encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)"
)
_QKV_PART = {"q": "query", "k": "key", "v": "value"}


def _hf_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename Hugging Face keys and fuse each block's q/k/v; unknown keys pass through unchanged."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        match = _HF_QKV.fullmatch(key)
        if match:
            block, long_name, short_name, kind = match.groups()
            qkv.setdefault((block, kind), {})[long_name or _QKV_PART[short_name]] = value
            continue
        for pattern, target in _HF_RENAMES:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, target, key)] = value
                break
        else:
            out[key] = value  # reported as unexpected by the strict check
    for (block, kind), parts in qkv.items():
        missing = [p for p in ("query", "key", "value") if p not in parts]
        if missing:
            raise KeyMismatchError(
                f"Hugging Face DINOv2 block {block} lacks attention {kind} for {missing}",
                missing=[f"encoder.layer.{block}.attention.attention.{p}.{kind}" for p in missing],
            )
        # DINOv2's fused projection stacks q, k, v along the output dimension, in that order.
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out


def dinov2_key_format(state_dict: Mapping[str, Tensor]) -> str:
    """``"hf"`` for Hugging Face transformers names, ``"meta"`` otherwise (Meta and timm share names)."""
    hf = any(k.startswith(("embeddings.", "encoder.layer.", "layernorm.")) for k in state_dict)
    return "hf" if hf else "meta"


def convert_dinov2_state_dict(
    state_dict: Mapping[str, Tensor], reference: Mapping[str, torch.Size]
) -> tuple[dict[str, Tensor], list[str]]:
    """Map a DINOv2 state dict (Meta, timm or HF names) to the official encoder names.

    Parameters
    ----------
    state_dict : mapping
        Tensors as read from the DINOv2 file.
    reference : mapping
        Expected encoder names (without ``image_encoder.encoder.``) and shapes.

    Returns
    -------
    state_dict, notes : dict, list of str
        Official names; notes about what was mapped or filled.

    Raises
    ------
    KeyMismatchError
        A Hugging Face block lacks one of its query, key or value projections.
    """
    notes: list[str] = []
    tensors = strip_prefixes(state_dict, DINOV2_PREFIXES)
    if dinov2_key_format(tensors) == "hf":
        tensors = _hf_to_official(tensors)
        notes.append("DINOv2 names mapped from Hugging Face transformers (q/k/v fused into qkv)")
    for key in _OPTIONAL_ENCODER_KEYS:
        if key not in tensors and key in reference:
            tensors[key] = torch.zeros(reference[key])
            notes.append(f"encoder {key} absent from the DINOv2 file: filled with zeros (unused)")
    return tensors, notes


def encoder_from_dinov2(
    preset: Preset,
    expected: Mapping[str, tuple],
    dinov2_file: str | os.PathLike | None,
    *,
    allow_download: bool,
    say: Callable[[str], None],
    notes: list[str],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Encoder tensors (with the ``image_encoder.encoder.`` prefix) from a DINOv2 file or the hub.

    Parameters
    ----------
    preset : Preset
        The preset being imported (names the hub sources).
    expected : mapping
        The whole model's name → ``(shape, dtype)``; only the encoder entries are used.
    dinov2_file : path or None
        The DINOv2 file; ``None`` looks in the Hugging Face cache, then downloads if allowed.
    allow_download : bool
        Allow fetching from the hub.
    say : callable
        Receives progress messages.
    notes : list of str
        Receives notes about mapped or filled names.

    Returns
    -------
    tensors, info : dict, dict
        The encoder tensors, strictly checked; where they came from (origin, path, sha256, key format).

    Raises
    ------
    WeightsError
        The file is unsafe, corrupt or does not match the encoder, or cannot be found or fetched.
    """
    reference = {k[len(ENCODER_PREFIX) :]: v for k, v in expected.items() if k.startswith(ENCODER_PREFIX)}
    origin = "file"
    if dinov2_file is None:
        say("the SINE file has no DINOv2 encoder; looking for it in the Hugging Face cache or hub")
        dinov2_file, origin = fetch_dinov2(preset, allow_download=allow_download), "hub"
    dinov2_file = Path(dinov2_file)
    say(f"reading DINOv2 encoder {dinov2_file}")
    raw, _ = read_state_dict(dinov2_file)
    key_format = dinov2_key_format(strip_prefixes(raw, DINOV2_PREFIXES))
    mapped, more = convert_dinov2_state_dict(raw, {k: v[0] for k, v in reference.items()})
    check_state_dict(mapped, reference, f"DINOv2 file {dinov2_file}")
    notes += more
    info = {
        "origin": origin,
        "path": str(dinov2_file.resolve()),
        "sha256": sha256_file(dinov2_file),
        "key_format": key_format,
    }
    return {ENCODER_PREFIX + k: v for k, v in mapped.items()}, info
