"""The forward_raw contract: output shapes, invariances and clear errors for bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_P, rect_mask

OUTPUT_KEYS = ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks")


def run(model, *inputs):
    with torch.no_grad():
        return model.forward_raw(*inputs)


def test_output_shapes(tiny_model, tiny_inputs):
    out = run(tiny_model, *tiny_inputs)
    g4 = 4 * (TINY_P // 14)
    assert out["pred_id_logits"].shape == (1, 2, 2)  # ids {3, 5}
    assert out["pred_ins_logits"].shape == (1, 10, 3)  # labels {1, 2} + negative
    assert out["pred_id_masks"].shape == (1, 2, g4, g4)
    assert out["pred_ins_masks"].shape == (1, 10, g4, g4)
    assert len(out["aux_outputs"]) == 3  # before block 0, after blocks 0 and 1
    for aux in out["aux_outputs"]:
        assert {k: v.shape for k, v in aux.items()} == {k: out[k].shape for k in OUTPUT_KEYS}
    assert out["ref_ids"].tolist() == [[3, 5]]
    assert out["ref_id_labels"].tolist() == [[1, 2]]
    assert out["ref_sem_labels"].tolist() == [[1, 2]]
    assert all(torch.isfinite(out[k]).all() for k in OUTPUT_KEYS)


def test_reference_order_and_mask_order_do_not_matter(tiny_model, tiny_inputs):
    refs, masks, labels, ids, target = tiny_inputs
    base = run(tiny_model, *tiny_inputs)
    swapped = run(
        tiny_model, refs.flip(0), masks[::-1], labels[::-1], ids[::-1], target
    )
    permuted_first = [masks[0].flip(0), masks[1]]
    permuted = run(tiny_model, refs, permuted_first, [labels[0].flip(0), labels[1]],
                   [ids[0].flip(0), ids[1]], target)
    for other in (swapped, permuted):
        for key in OUTPUT_KEYS:
            torch.testing.assert_close(other[key], base[key], atol=1e-4, rtol=1e-4)


def test_batched_decode_equals_one_by_one(tiny_model, tiny_inputs):
    refs, masks, labels, ids, target = tiny_inputs
    with torch.no_grad():
        feats = tiny_model.encode_images(torch.cat([refs, target, -target]))
        tokens = tiny_model.reference_tokens(feats[:2], masks, labels, ids)
        both = tiny_model.decode(feats[2:], tokens, return_aux=False)
        first = tiny_model.decode(feats[2:3], tokens)
        second = tiny_model.decode(feats[3:4], tokens)
    assert "aux_outputs" not in both
    for key in OUTPUT_KEYS:
        torch.testing.assert_close(both[key][:1], first[key], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both[key][1:], second[key], atol=1e-5, rtol=1e-5)


def test_reference_content_changes_the_answer(tiny_model, tiny_inputs):
    refs, masks, labels, ids, target = tiny_inputs
    base = run(tiny_model, *tiny_inputs)
    moved = [torch.stack([rect_mask(TINY_P, 70, 70, 30, 30), masks[0][1]]), masks[1]]
    other = run(tiny_model, refs, moved, labels, ids, target)
    assert not torch.allclose(other["pred_id_masks"], base["pred_id_masks"], atol=1e-3)


def _bad(inputs, **changes):
    names = ("ref_images", "ref_masks", "ref_labels", "ref_ids", "target")
    values = dict(zip(names, inputs, strict=True))
    values.update(changes)
    return [values[n] for n in names]


P = TINY_P


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(ref_images=torch.randn(3, P, P)), r"ref_images must have shape \(B, 3, P, P\)"),
        (dict(ref_images=torch.randn(2, 3, P, P - 14)), "pad images to a square"),
        (dict(ref_images=torch.randn(2, 3, 100, 100)), "not a multiple of 14: pad to 112"),
        (dict(target=torch.randn(3, P, P)), r"target must have shape"),
        (dict(target=torch.randn(2, 3, P, P)), "target must hold one image"),
        (dict(target=torch.randn(1, 3, 126, 126)), "use one P"),
        (dict(ref_images=torch.zeros(2, 3, P, P, dtype=torch.uint8)), "must be a float tensor"),
        (dict(target=torch.full((1, 3, P, P), float("nan"))), "NaN or inf"),
        (dict(ref_masks="masks"), "ref_masks must be a list"),
        (dict(ref_labels=[torch.tensor([1, 2])]), "ref_labels has 1 entries for 2 reference"),
        (dict(ref_ids=[torch.tensor([1, 2]), torch.tensor([1, 2])]),
         r"ref_ids\[1\] has 2 values for 1 masks"),
        (dict(ref_labels=[torch.tensor([1.0, 2.0]), torch.tensor([1])]),
         r"ref_labels\[0\] must be an integer tensor"),
        (dict(ref_masks=[torch.zeros(2, P, P, dtype=torch.bool), torch.ones(1, P, P).bool()]),
         r"ref_masks\[0\] has empty masks at indices \[0, 1\]"),
        (dict(ref_masks=[torch.zeros(0, P, P, dtype=torch.bool), torch.ones(1, P, P).bool()],
              ref_labels=[torch.zeros(0, dtype=torch.long), torch.tensor([1])],
              ref_ids=[torch.zeros(0, dtype=torch.long), torch.tensor([1])]),
         "reference 0 has no masks"),
        (dict(ref_masks=[torch.ones(2, P, P).bool(), torch.ones(1, 56, 56).bool()]),
         r"ref_masks\[1\] must be a \(N, 112, 112\) tensor"),
        (dict(ref_masks=[torch.rand(2, P, P), torch.ones(1, P, P).bool()]), "must be bool"),
    ],
)
def test_bad_input_raises_a_clear_value_error(tiny_model, tiny_inputs, changes, message):
    with pytest.raises(ValueError, match=message):
        run(tiny_model, *_bad(tiny_inputs, **changes))


def test_integer_zero_one_masks_are_accepted(tiny_model, tiny_inputs):
    refs, masks, labels, ids, target = tiny_inputs
    as_int = [m.to(torch.uint8) for m in masks]
    torch.testing.assert_close(
        run(tiny_model, refs, as_int, labels, ids, target)["pred_id_logits"],
        run(tiny_model, *tiny_inputs)["pred_id_logits"],
    )
