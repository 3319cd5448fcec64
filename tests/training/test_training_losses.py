"""Training losses: point sampling, matching and the SINE criterion on hand-computable cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sine_model.training import (
    HungarianMatcher,
    SetCriterion,
    class_indices,
    dice_loss,
    match_ids,
    point_sample,
    sigmoid_bce_loss,
    uncertain_points,
)
from sine_model.training.matcher import pairwise_bce_cost, pairwise_dice_cost

BIG = 20.0  # saturated class logits
# Mask logits of the "perfect" prediction. Bilinear point reads give fractional targets within a pixel of
# every boundary; there logit ±MASK·(2t − 1) stays near the best BCE only for a moderate MASK.
MASK = 6.0
SIDE = 16
REF_IDS = torch.tensor([2, 3, 9])  # ID query 0 (id 2) has no target
REF_LABELS = torch.tensor([1, 2, 7])  # M = 3; class 7 is absent from the target
TARGET_IDS = torch.tensor([3, 5, 9])
TARGET_LABELS = torch.tensor([1, 2, 2])
QUERY_OF_TARGET = [4, 0, 2]  # instance query holding each target in the perfect prediction
NUM_QUERIES = 6


def rect(top: int, left: int, height: int, width: int, side: int = SIDE) -> torch.Tensor:
    mask = torch.zeros(side, side, dtype=torch.bool)
    mask[top : top + height, left : left + width] = True
    return mask


def scene_masks() -> torch.Tensor:
    return torch.stack([rect(1, 1, 5, 6), rect(8, 2, 6, 5), rect(3, 9, 10, 5)])


def target_dict(masks=None, labels=TARGET_LABELS, ids=TARGET_IDS) -> dict:
    return {"masks": scene_masks() if masks is None else masks, "labels": labels, "ids": ids}


def perfect_layer(masks: torch.Tensor, query_of_target=QUERY_OF_TARGET) -> dict:
    """Saturated logits on the right masks and classes (batch of 1)."""
    masks = masks.float()
    classes = class_indices(TARGET_LABELS, REF_LABELS)
    ins_masks = torch.full((NUM_QUERIES, SIDE, SIDE), -MASK)
    ins_logits = torch.full((NUM_QUERIES, len(REF_LABELS) + 1), -BIG)
    ins_logits[:, -1] = BIG
    for t, q in enumerate(query_of_target):
        ins_masks[q] = MASK * (2 * masks[t] - 1)
        ins_logits[q] = -BIG
        ins_logits[q, classes[t]] = BIG
    id_masks = torch.full((len(REF_IDS), SIDE, SIDE), -MASK)
    id_logits = torch.tensor([[-BIG, BIG]]).repeat(len(REF_IDS), 1)
    for n, obj in enumerate(REF_IDS.tolist()):
        if obj in TARGET_IDS.tolist():
            id_masks[n] = MASK * (2 * masks[TARGET_IDS.tolist().index(obj)] - 1)
            id_logits[n] = torch.tensor([BIG, -BIG])
    layer = {"pred_id_logits": id_logits, "pred_ins_logits": ins_logits,
             "pred_id_masks": id_masks, "pred_ins_masks": ins_masks}
    return {k: v[None] for k, v in layer.items()}


def model_outputs(layer: dict, aux: list[dict] | None = None) -> dict:
    out = dict(layer)
    out["ref_ids"], out["ref_sem_labels"] = REF_IDS[None], REF_LABELS[None]
    out["ref_id_labels"] = torch.tensor([[1, 1, 2]])
    if aux is not None:
        out["aux_outputs"] = aux
    return out


def criterion(**kwargs) -> SetCriterion:
    kwargs.setdefault("num_points", 256)
    return SetCriterion(HungarianMatcher(num_points=256), **kwargs)


def losses_of(outputs, targets, seed: int = 0, **kwargs) -> dict:
    return criterion(**kwargs)(outputs, targets, generator=torch.Generator().manual_seed(seed))


# --- point sampling ---------------------------------------------------------------------------------


def test_point_sample_reads_pixel_centres_and_midpoints():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # (1, 2, 2)
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0.0, 0.0]]])
    assert torch.allclose(point_sample(maps, coords), torch.tensor([[0.0, 1.0, 2.0, 1.5, 0.0]]))
    assert point_sample(maps[:, None], coords).shape == (1, 1, 5)
    # a full mask reads 1 everywhere, also in the outer half-pixel fringe (border padding)
    assert torch.allclose(point_sample(torch.ones(1, 4, 4), torch.rand(1, 100, 2)), torch.ones(1, 100))


def test_importance_sampling_concentrates_on_the_zero_logit_boundary():
    x = (torch.arange(64) + 0.5) / 64
    logits = (10 * (x - 0.5)).expand(64, 64)[None]  # boundary at x = 0.5, a vertical line
    points = uncertain_points(logits, 2000, 3.0, 0.75, generator=torch.Generator().manual_seed(0))
    assert points.shape == (1, 2000, 2) and points.min() >= 0 and points.max() <= 1
    near = ((points[0, :, 0] - 0.5).abs() < 0.125).float().mean().item()
    # 75 % chosen among the 1/4 most uncertain of 3× candidates, plus 1/4 of the 25 % uniform ones
    assert 0.75 < near < 0.88
    uniform = uncertain_points(logits, 2000, 3.0, 0.0, generator=torch.Generator().manual_seed(0))
    assert ((uniform[0, :, 0] - 0.5).abs() < 0.125).float().mean().item() < 0.32


# --- hand formulas ----------------------------------------------------------------------------------


def test_bce_and_dice_match_hand_formulas():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = 1/2, 3/4
    targets = torch.tensor([[1.0, 0.0]])
    # BCE: (ln 2 + ln 4) / 2 per mask; dice: 1 − (2·½ + 1) / (5/4 + 1 + 1) = 5/13
    assert sigmoid_bce_loss(logits, targets, 2.0).item() == pytest.approx(1.5 * math.log(2) / 2)
    assert dice_loss(logits, targets, 2.0).item() == pytest.approx(5 / 13 / 2)
    pair_logits = torch.cat([logits, torch.tensor([[BIG, -BIG]])])
    pair_targets = torch.cat([targets, torch.tensor([[1.0, 0.0]])])
    bce, dice = pairwise_bce_cost(pair_logits, pair_targets), pairwise_dice_cost(pair_logits, pair_targets)
    assert bce.shape == dice.shape == (2, 2)
    assert bce[0, 0].item() == pytest.approx(1.5 * math.log(2))
    assert dice[0, 0].item() == pytest.approx(5 / 13)
    assert bce[1, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert dice[1, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_constant_logits_give_the_hand_computed_mask_losses():
    """Constant logits read the same at every point: loss values are exact, whatever points are drawn.

    Targets at 32×32 against 16×16 predictions: masks are read at normalised points, never resized.
    """
    full, empty = torch.ones(32, 32, dtype=torch.bool), torch.zeros(32, 32, dtype=torch.bool)
    c_full, c_empty, c_id, points = 2.0, -1.0, 0.5, 50
    layer = {
        "pred_id_logits": torch.tensor([[[3.0, 0.0]]]),
        "pred_ins_logits": torch.tensor([[[BIG, -BIG], [BIG, -BIG]]]),
        "pred_id_masks": torch.full((1, 1, SIDE, SIDE), c_id),
        "pred_ins_masks": torch.tensor([c_full, c_empty]).reshape(1, 2, 1, 1).expand(1, 2, SIDE, SIDE),
        "ref_ids": torch.tensor([[4]]),
        "ref_sem_labels": torch.tensor([[1]]),
    }
    target = {"masks": torch.stack([full, empty]), "labels": torch.tensor([1, 1]),
              "ids": torch.tensor([4, 6])}
    out = SetCriterion(HungarianMatcher(num_points=points), num_points=points)(layer, [target])
    num_masks = 3  # 1 ID match + 2 instance matches
    sig = torch.sigmoid(torch.tensor([c_full, c_empty, c_id])).tolist()
    bce = F.softplus(torch.tensor([-c_full, c_empty, -c_id])).sum()
    dice = (1 - (2 * sig[0] * points + 1) / (sig[0] * points + points + 1)
            + 1 - 1 / (sig[1] * points + 1)
            + 1 - (2 * sig[2] * points + 1) / (sig[2] * points + points + 1))
    assert out["loss_mask"].item() == pytest.approx(5.0 * bce.item() / num_masks, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(5.0 * dice / num_masks, rel=1e-5)
    assert out["loss_ce_id"].item() == pytest.approx(2.0 * F.softplus(torch.tensor(-3.0)).item(), rel=1e-5)


# --- matching ---------------------------------------------------------------------------------------


def test_class_indices_index_the_sorted_reference_labels():
    assert class_indices(torch.tensor([7, 1, 2, 2]), REF_LABELS).tolist() == [2, 0, 1, 1]
    with pytest.raises(ValueError, match="not among the reference labels"):
        class_indices(torch.tensor([1, 4]), REF_LABELS)


def test_id_matching_pairs_equal_ids_by_value():
    assert [t.tolist() for t in match_ids(REF_IDS, TARGET_IDS)] == [[1, 2], [0, 2]]
    assert [t.tolist() for t in match_ids(REF_IDS, torch.tensor([9, 8, 3]))] == [[1, 2], [2, 0]]
    assert [t.numel() for t in match_ids(REF_IDS, torch.tensor([5]))] == [0, 0]
    with pytest.raises(ValueError, match="unique"):
        match_ids(REF_IDS, torch.tensor([3, 3]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hungarian_matcher_recovers_a_permutation(seed):
    layer = perfect_layer(scene_masks())
    classes = class_indices(TARGET_LABELS, REF_LABELS)
    src, tgt = HungarianMatcher(num_points=64).match(
        layer["pred_ins_logits"][0], layer["pred_ins_masks"][0], classes, scene_masks(),
        generator=torch.Generator().manual_seed(seed),
    )
    assert src.tolist() == sorted(QUERY_OF_TARGET)
    assert dict(zip(src.tolist(), tgt.tolist(), strict=True)) == {q: t for t, q in enumerate(QUERY_OF_TARGET)}


def test_hungarian_matcher_uses_the_class_when_masks_tie():
    masks = scene_masks()[1:2]  # one target, label 2 → class index 1
    logits = torch.full((3, 4), -BIG)
    logits[torch.arange(3), torch.tensor([0, 1, 3])] = BIG  # classes 0 (label 1), 1 (label 2), none
    same_masks = (MASK * (2 * masks.float() - 1)).expand(3, SIDE, SIDE)
    src, tgt = HungarianMatcher(num_points=64).match(logits, same_masks, torch.tensor([1]), masks)
    assert (src.tolist(), tgt.tolist()) == ([1], [0])


# --- the criterion ----------------------------------------------------------------------------------


def test_unmatched_id_queries_get_no_object_with_weight_0_1():
    layer = perfect_layer(scene_masks())
    id_logits = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.8]])
    layer["pred_id_logits"] = id_logits[None]
    targets = torch.tensor([1, 0, 0])  # id 2 is absent from the target; ids 3 and 9 are present
    nll = -torch.log_softmax(id_logits, -1)[torch.arange(3), targets]
    for eos in (0.1, 1.0):
        weight = torch.tensor([eos, 1.0, 1.0])
        expected = (weight * nll).sum() / weight.sum()
        out = losses_of(model_outputs(layer), [target_dict()], no_object_weight=eos)
        assert out["loss_ce_id"].item() == pytest.approx(2.0 * expected.item(), rel=1e-5)
    assert losses_of(model_outputs(layer), [target_dict()], no_object_weight=0.1)["loss_ce_id"] != \
        pytest.approx(losses_of(model_outputs(layer), [target_dict()], no_object_weight=1.0)["loss_ce_id"])


def test_instance_ce_weights_no_object_and_averages_over_images():
    generator = torch.Generator().manual_seed(3)
    layers, expected = [], []
    classes = class_indices(TARGET_LABELS, REF_LABELS)
    for _ in range(2):
        layer = perfect_layer(scene_masks())  # masks fix the matching; class logits are random
        logits = torch.randn(NUM_QUERIES, 4, generator=generator)
        layer["pred_ins_logits"] = logits[None]
        target = torch.full((NUM_QUERIES,), 3)
        target[QUERY_OF_TARGET] = classes
        weight = torch.where(target == 3, 0.1, 1.0)
        nll = -torch.log_softmax(logits, -1)[torch.arange(NUM_QUERIES), target]
        expected.append((weight * nll).sum() / weight.sum())
        layers.append(model_outputs(layer))
    out = losses_of(layers, [target_dict(), target_dict()])
    assert out["loss_ce_ins"].item() == pytest.approx(2.0 * (expected[0] + expected[1]).item() / 2, rel=1e-5)


def perturbations() -> dict:
    def swap_classes(layer):  # queries 4 (label 1) and 0 (label 2) exchange masks
        layer["pred_ins_masks"][0, [4, 0]] = layer["pred_ins_masks"][0, [0, 4]]

    def noisy_masks(layer):
        layer["pred_ins_masks"] += 3 * torch.randn(layer["pred_ins_masks"].shape, generator=gen)

    def shifted_masks(layer):
        layer["pred_ins_masks"] = layer["pred_ins_masks"].roll(2, dims=-1)
        layer["pred_id_masks"] = layer["pred_id_masks"].roll(2, dims=-2)

    def wrong_class(layer):
        layer["pred_ins_logits"][0, 2] = layer["pred_ins_logits"][0, 2].roll(1)

    def id_says_present(layer):
        layer["pred_id_logits"][0, 0] = torch.tensor([BIG, -BIG])

    def soft(layer):
        for key in layer:
            layer[key] = layer[key] / 3

    def sharp(layer):
        for key in ("pred_ins_masks", "pred_id_masks"):
            layer[key] = layer[key] * 3

    gen = torch.Generator().manual_seed(0)
    kinds = (swap_classes, noisy_masks, shifted_masks, wrong_class, id_says_present, soft, sharp)
    return {f.__name__: f for f in kinds}


@pytest.mark.parametrize("name", list(perturbations()))
def test_perfect_prediction_beats_every_perturbation(name):
    perfect = losses_of(model_outputs(perfect_layer(scene_masks())), [target_dict()])
    for key in ("loss_ce_ins", "loss_ce_id"):
        assert perfect[key].item() < 1e-6
    layer = perfect_layer(scene_masks())
    perturbations()[name](layer)
    worse = losses_of(model_outputs(layer), [target_dict()])
    assert worse["total"].item() > perfect["total"].item() + 0.1


def test_term_count_with_auxiliary_outputs_and_per_layer_matching():
    final = perfect_layer(scene_masks())
    aux = [perfect_layer(scene_masks(), query_of_target=[i % NUM_QUERIES, (i + 1) % NUM_QUERIES,
                                                         (i + 3) % NUM_QUERIES]) for i in range(6)]
    out = losses_of(model_outputs(final, aux), [target_dict()])
    terms = {k: v for k, v in out.items() if k != "total"}
    assert len(terms) == 28 == 4 * (1 + 6)  # official count with 6 auxiliary outputs
    assert {"loss_ce_ins_0", "loss_dice_5", "loss_mask"} <= set(terms)
    assert out["total"].item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)
    # every auxiliary layer, perfect under its own permutation, is matched on its own
    assert max(out[f"loss_ce_ins_{i}"].item() for i in range(6)) < 1e-6
    assert len(losses_of(model_outputs(final, aux), [target_dict()], deep_supervision=False)) == 5


def test_batched_dict_equals_list_of_per_reference_dicts():
    a, b = perfect_layer(scene_masks()), perfect_layer(scene_masks(), query_of_target=[1, 3, 5])
    b["pred_ins_masks"] = b["pred_ins_masks"] / 4
    batched = model_outputs({k: torch.cat([a[k], b[k]]) for k in a})
    batched["ref_ids"], batched["ref_sem_labels"] = REF_IDS.repeat(2, 1), REF_LABELS.repeat(2, 1)
    one = losses_of(batched, [target_dict(), target_dict()])
    two = losses_of([model_outputs(a), model_outputs(b)], [target_dict(), target_dict()])
    for key in one:
        assert one[key].item() == pytest.approx(two[key].item(), rel=1e-6)


def test_gradients_flow_to_every_prediction():
    layers = [perfect_layer(scene_masks()) for _ in range(3)]
    for layer in layers:
        for key in layer:
            layer[key] = (layer[key] / 4).requires_grad_()
    out = losses_of(model_outputs(layers[-1], layers[:-1]), [target_dict()])
    out["total"].backward()
    for layer in layers:
        for key, value in layer.items():
            assert value.grad is not None and value.grad.abs().sum() > 0, key


def test_tiny_model_trains_through_the_criterion(tiny_model, tiny_inputs):
    ref_images, masks, labels, ids, target = tiny_inputs
    tiny_model.train()
    outputs = tiny_model.forward_raw(ref_images, masks, labels, ids, target)
    # a crop-pair-like target: the first reference's objects (ids 3, 5), at image resolution
    out = losses_of(outputs, [{"masks": masks[0], "labels": labels[0], "ids": ids[0]}])
    assert len(out) - 1 == 4 * (1 + len(outputs["aux_outputs"]))
    assert torch.isfinite(out["total"])
    out["total"].backward()
    decoder = tiny_model.transformer_decoder
    assert decoder.mask_embed.layers[-1].weight.grad.abs().sum() > 0


def test_a_target_without_objects_gives_only_no_object_terms():
    layer = perfect_layer(scene_masks())
    layer["pred_ins_masks"].requires_grad_()
    none = torch.zeros(0, dtype=torch.int64)
    empty = {"masks": torch.zeros(0, SIDE, SIDE, dtype=torch.bool), "labels": none, "ids": none}
    out = losses_of(model_outputs(layer), [empty])
    assert out["loss_mask"].item() == out["loss_dice"].item() == 0.0
    assert out["loss_ce_id"].item() > 1.0  # ids 3 and 9 are predicted present but the target is empty
    out["total"].backward()


def test_bad_targets_raise_clear_errors():
    outputs = model_outputs(perfect_layer(scene_masks()))
    with pytest.raises(ValueError, match="2 targets"):
        losses_of(outputs, [target_dict(), target_dict()])
    with pytest.raises(ValueError, match="not among the reference labels"):
        losses_of(outputs, [target_dict(labels=torch.tensor([1, 2, 4]))])
    with pytest.raises(ValueError, match="T labels and T ids"):
        losses_of(outputs, [target_dict(ids=torch.tensor([3, 5]))])
