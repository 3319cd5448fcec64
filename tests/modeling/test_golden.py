"""Golden-output regression test: our forward pass against outputs of the official implementation.

``tests/data/golden_tiny.safetensors`` holds a tiny configuration's weights, inputs for three scenarios
(training copy: one reference with several masks; FSS copy: two one-mask shots; VOS copy: objects across
two frames) and the outputs the *official* code produced for them (computed in float64; see
``golden_tiny.json``). Any refactor that drifts from the official numbers fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sine_model import EncoderConfig, build_sine

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = load_file(str(DATA / "golden_tiny.safetensors"))
META = json.loads((DATA / "golden_tiny.json").read_text())
KEYS = ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks")


def _model(dtype: torch.dtype):
    model = build_sine(EncoderConfig("tiny", 32, 2, 2), dim=32, num_heads=4, ffn_dim=64,
                       num_decoder_layers=3, num_queries=10)
    state = {k[len("state."):]: v.float() for k, v in GOLDEN.items() if k.startswith("state.")}
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()


def _inputs(name: str, dtype: torch.dtype):
    count = META["scenarios"][name]["num_refs"]
    return (
        GOLDEN[f"{name}.ref_images"].to(dtype),
        [GOLDEN[f"{name}.ref_masks.{k}"].bool() for k in range(count)],
        [GOLDEN[f"{name}.ref_labels.{k}"] for k in range(count)],
        [GOLDEN[f"{name}.ref_ids.{k}"] for k in range(count)],
        GOLDEN[f"{name}.target"].to(dtype),
    )


@pytest.mark.parametrize("name", sorted(META["scenarios"]))
@pytest.mark.parametrize("dtype, rel_tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_matches_official_outputs(name, dtype, rel_tol):
    model = _model(dtype)
    with torch.no_grad():
        out = model.forward_raw(*_inputs(name, dtype))
    expected_aux = META["scenarios"][name]["num_aux"]
    assert len(out["aux_outputs"]) == expected_aux
    predictions = {key: out[key] for key in KEYS}
    for i, aux in enumerate(out["aux_outputs"]):
        predictions.update({f"aux.{i}.{key}": aux[key] for key in KEYS})
    for key, actual in predictions.items():
        reference = GOLDEN[f"{name}.{key}"].double()
        assert actual.shape == reference.shape, key
        atol = rel_tol * reference.abs().max().item()
        torch.testing.assert_close(actual.double(), reference, rtol=0, atol=atol, msg=f"{name}: {key}")
    assert out["ref_id_labels"].tolist() == GOLDEN[f"{name}.ref_id_labels"].tolist()
    assert out["ref_sem_labels"].tolist() == GOLDEN[f"{name}.ref_sem_labels"].tolist()


def test_golden_detects_a_drift():
    """The comparison is sharp enough to catch a plausible mistake (size= instead of scale_factor=)."""
    model = _model(torch.float64)
    encoder = model.image_encoder.encoder
    original = encoder.interpolated_pos_embed

    def size_based(grid_h: int, grid_w: int) -> torch.Tensor:
        pos = encoder.pos_embed
        side = int((pos.shape[1] - 1) ** 0.5)
        patch = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = torch.nn.functional.interpolate(patch, size=(grid_h, grid_w), mode="bicubic",
                                                align_corners=False)
        return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)], dim=1)

    encoder.interpolated_pos_embed = size_based
    try:
        with torch.no_grad():
            out = model.forward_raw(*_inputs("train", torch.float64))
    finally:
        encoder.interpolated_pos_embed = original
    reference = GOLDEN["train.pred_ins_masks"].double()
    assert (out["pred_ins_masks"] - reference).abs().max() > 1e-4 * reference.abs().max()
