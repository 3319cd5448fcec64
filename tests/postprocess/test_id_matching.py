"""ID answers by matching instance objects to reference objects: registration, similarity, assignment."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from conftest import build_tiny
from scipy import ndimage as ndi

from sine_model import OFFICIAL_PRESET, get_preset
from sine_model.engine.propagator import Propagator
from sine_model.hub.presets import InputSpec
from sine_model.postprocess import id_matching
from sine_model.postprocess.id_matching import describe_references, match_ids, register


def scene(seed: int = 0, side: int = 160, first_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of varied size and brightness on a textured background; ids from ``first_id``."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((side, side), np.int64)
    yy, xx = np.mgrid[:side, :side]
    image = ndi.gaussian_filter(rng.normal(60, 30, (side, side)), 2)
    for k in range(12):
        cy, cx, r = rng.integers(15, side - 15), rng.integers(15, side - 15), rng.integers(5, 11)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2) & (labels == 0)
        labels[disc] = first_id + k
        image[disc] = rng.uniform(120, 250)
    return image.astype(np.float32), labels


def crop_pair(image, labels, fraction=0.75):
    h, w = labels.shape
    ch, cw = round(h * fraction), round(w * fraction)
    return image[:ch, :cw], labels[:ch, :cw], image[h - ch :, w - cw :], labels[h - ch :, w - cw :]


def test_registration_finds_the_crop_offset_and_refuses_unrelated_images():
    image, labels = scene()
    a, _, b, _ = crop_pair(image, labels)
    shift, confidence = register(a, b)
    assert shift == (40, 40) and confidence > 0.99
    _, unrelated = register(a, np.random.default_rng(5).normal(0, 1, b.shape).astype(np.float32))
    assert unrelated < 0.5


def test_registration_reuses_the_reference_spectrum_with_the_same_answers(monkeypatch):
    image, labels = scene()
    a, _, b, _ = crop_pair(image, labels)
    cache: dict = {}
    plain = register(a, b)
    assert register(a, b, cache) == plain and len(cache) == 1  # filled
    transforms = []
    rfft2 = np.fft.rfft2
    monkeypatch.setattr(np.fft, "rfft2", lambda x, s: transforms.append(1) or rfft2(x, s))
    assert register(a, b, cache) == plain and len(transforms) == 1  # only the target's transform
    for k in range(1, id_matching.SPECTRA_KEPT + 2):  # other target sizes: the oldest shapes leave
        register(a, b[k:], cache)
    assert len(cache) == id_matching.SPECTRA_KEPT


def test_the_reference_as_target_gets_every_id_back():
    """Instance labels = the reference objects renumbered: each gets its own id, as an unchanged object
    (the target is the reference) or, without the transfer, by matching (similarity about 1)."""
    image, labels = scene(first_id=2**40)
    objects = describe_references([image], [labels])
    renumbered = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)[::-1].copy()[::-1]
    for transfer, how in ((True, "unchanged"), (False, "matched")):
        id_map, found = match_ids(objects, image, renumbered, floor=0.5, transfer=transfer)
        assert np.array_equal(id_map, labels)
        assert len(found) == len(np.unique(labels)) - 1 and min(s for _, s, _ in found) > 0.95
        assert {h for _, _, h in found} == {how}


def test_crop_pairs_keep_ids_and_cut_objects_still_match():
    """The bottom-right crop's objects take the ids of the same objects in the top-left crop (those with
    at least half of their area in each crop; a sliver may go unmatched)."""
    image, labels = scene(seed=1)
    a, a_lab, b, b_lab = crop_pair(image, labels)
    area = {i: (labels == i).sum() for i in np.unique(labels)}
    shared = [i for i in set(np.unique(a_lab)) & set(np.unique(b_lab)) - {0}
              if min((a_lab == i).sum(), (b_lab == i).sum()) >= area[i] / 2]
    assert len(shared) >= 4
    instances = np.unique(b_lab, return_inverse=True)[1].reshape(b_lab.shape)  # fresh numbering
    id_map, found = match_ids(describe_references([a], [a_lab]), b, instances, floor=0.5)
    assert set(shared) <= {i for i, _, _ in found} <= set(np.unique(a_lab)) & set(np.unique(b_lab))
    for i, _, _ in found:
        assert np.array_equal(id_map == i, b_lab == i)


def test_an_unrelated_target_gets_no_ids_and_the_floor_drops_weak_pairs():
    image, labels = scene(seed=2)
    other, other_labels = scene(seed=3)
    objects = describe_references([image], [labels])
    assert match_ids(objects, other, other_labels, floor=0.5)[1] == []
    shrunk = ndi.grey_erosion(labels, size=5)  # every object a lot smaller: area term weakens them
    strict = match_ids(objects, image, shrunk, floor=0.9, transfer=False)[1]
    loose = match_ids(objects, image, shrunk, floor=0.0, transfer=False)[1]
    assert len(strict) < len(loose) == len(np.unique(shrunk)) - 1


def _matching_model():
    model = build_tiny()
    model.preset = types.SimpleNamespace(input=InputSpec(pad_size=112), instance_source="queries",
                                         id_source="matching")
    return model


def test_engine_answers_id_mode_from_its_instance_answer():
    """With id_source "matching", the ID map is made from the instance answer (every ID pixel is an
    instance pixel; every id is a reference id), and only the asked modes come back. The target is the
    reference with noise (no object unchanged: every id is matched)."""
    image, labels = scene(seed=4, side=112)
    target = image + np.random.default_rng(0).normal(0, 25, image.shape).astype(np.float32)
    propagator = Propagator(_matching_model(), "cpu", score_thresholds={"instance": -1.0, "id": 0.0})
    propagator.set_references([(image, labels)])
    (both,) = propagator.propagate(target, ["id", "instance"])
    assert set(both.labels) == {"id", "instance"}
    ids = set(np.unique(both.labels["id"])) - {0}
    assert ids and ids <= set(np.unique(labels)) - {0}
    assert not (both.labels["id"] > 0)[both.labels["instance"] == 0].any()
    assert all(s.source.endswith("|matched") for s in both.scores if s.mode == "id")
    (only_id,) = propagator.propagate(target, ["id"])
    assert set(only_id.labels) == {"id"} and {s.mode for s in only_id.scores} <= {"id"}
    assert np.array_equal(only_id.labels["id"], both.labels["id"])


def test_engine_gives_the_reference_its_own_objects_back_in_id_mode():
    """The reference as a target (e.g. its plane in a stack run): whatever the (random) model answers, the
    ID answer is the user's objects, each marked as unchanged."""
    image, labels = scene(seed=5, side=112)
    propagator = Propagator(_matching_model(), "cpu")
    propagator.set_references([(image, labels)])
    (result,) = propagator.propagate(image, ["id"])
    assert np.array_equal(result.labels["id"], labels)
    assert {s.source.split("|")[-1] for s in result.scores} == {"unchanged"}


def test_official_weights_keep_their_id_queries():
    with pytest.raises(ValueError, match="id_source"):
        dataclasses.replace(get_preset(OFFICIAL_PRESET), id_source="matching")
    assert get_preset(OFFICIAL_PRESET).id_source == "queries"


def test_an_unknown_id_source_is_refused():
    with pytest.raises(ValueError, match="id_source must be one of"):
        Propagator(build_tiny(), "cpu", pad=112, id_source="guess")


def test_registration_of_images_that_cannot_overlap_much():
    """A tall narrow target against a short wide reference: no error (a negative slice stop indexed from
    the end before), and at most a weak confidence."""
    rng = np.random.default_rng(0)
    _, confidence = register(rng.random((6, 51), dtype=np.float32), rng.random((33, 8), dtype=np.float32))
    assert confidence < 0.5
