"""Fitting stages either work or step aside with one line saying why; the run always reaches its targets.

Every case runs the whole recipe (calibrate, adapt, refine) with a few steps each, then propagates.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_adapt import blob_pair, tiny_embedded

from sine_model.engine.propagator import Propagator
from sine_model.fitting.preparation import ReferencePreparation
from sine_model.training.pairs import NoUsablePairError, PairSampler

pytestmark = pytest.mark.usefixtures("one_thread")


def engine() -> Propagator:
    return Propagator(tiny_embedded(), "cpu", pad=112)  # fewer tiles than 56: calibration is 20 passes


def prepare_and_propagate(image: np.ndarray, labels: np.ndarray, **budgets) -> ReferencePreparation:
    budgets = {"calibrate": True, "adapt_steps": 2, "refine_steps": 3, **budgets}
    preparation = ReferencePreparation(engine(), [(image, labels)], **budgets).run()
    result = next(preparation.propagator.propagate([image], modes=("instance", "semantic")))
    assert result.labels["semantic"].shape == labels.shape  # the run reached its target
    assert len(preparation.report()) == 3  # one line per stage: what it did, or why it stepped aside
    return preparation


def scene(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]], seed: int = 0):
    """A noisy image with bright boxes (top, left, height, width) and their instance labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k, (top, left, height, width) in enumerate(boxes, 1):
        labels[top:top + height, left:left + width] = k
    image = (labels > 0) * 0.6 + rng.uniform(0, 0.2, shape)
    return image.astype(np.float32), labels


def test_sparse_tiny_objects_in_a_large_frame_give_training_pairs():
    # the bacteria: a few small rods in a large frame, far more frame than any crop
    rng = np.random.default_rng(3)  # crops of 112 pixels, a fifth of the frame each
    boxes = [(int(rng.integers(0, 200)), int(rng.integers(0, 300)), 2, 6) for _ in range(6)]
    image, labels = scene((202, 306), boxes)
    preparation = prepare_and_propagate(image, labels)
    assert "adapt" not in preparation.stepped_aside and preparation.adaptation.steps >= 2


def test_a_single_object():
    image, labels = scene((80, 96), [(30, 40, 8, 8)])
    preparation = prepare_and_propagate(image, labels)
    assert preparation.stepped_aside["calibrate"].startswith("too few objects (1 labelled")
    assert preparation.adaptation is not None and preparation.refinement is not None
    assert preparation.refinement.held_out is False  # no halves: the reference predicts itself


def test_a_reference_too_small_to_halve():
    image, labels = scene((24, 20), [(2, 2, 5, 5), (15, 12, 5, 5)])
    preparation = prepare_and_propagate(image, labels)
    assert preparation.stepped_aside["calibrate"].startswith("the reference is too small to halve (24×20")
    assert preparation.refinement is not None and preparation.adaptation is not None


def test_three_thousand_objects():
    boxes = [(3 * row, 4 * col, 2, 3) for row in range(50) for col in range(60)]
    image, labels = scene((150, 240), boxes)
    assert labels.max() == 3000
    preparation = prepare_and_propagate(image, labels, adapt_steps=1)
    assert preparation.stepped_aside == {}


def test_single_pixel_objects_still_train():
    # the views' fragment floor follows the objects' size, and the crops are placed around them
    image, labels = scene((120, 120), [(20, 20, 1, 1), (90, 100, 1, 1)])
    preparation = prepare_and_propagate(image, labels)
    assert preparation.adaptation.steps == 4  # two cross-fitted copies, two steps each


def test_adaptation_without_usable_crops_steps_aside(monkeypatch):
    def no_pair(self, rng=None):
        raise NoUsablePairError("No usable pair after 50 draws")

    monkeypatch.setattr(PairSampler, "sample", no_pair)
    image, labels = blob_pair(0)
    preparation = prepare_and_propagate(image, labels)
    assert preparation.adaptation is None
    assert preparation.stepped_aside["adapt"].startswith("objects too small")
    assert preparation.refinement is not None and preparation.fold_models is None
    assert preparation.report()[0].startswith("adaptation stepped aside: objects too small")


@pytest.mark.parametrize("forest", [False, True])
def test_the_same_inputs_give_the_same_proposals(forest):
    image, labels = blob_pair(0)
    target = blob_pair(1)[0]
    answers = []
    for _ in range(2):
        preparation = ReferencePreparation(engine(), [(image, labels)], calibrate=True, adapt_steps=2,
                                           refine_steps=5, refine_forest=forest).run()
        result = next(preparation.propagator.propagate([target], modes=("instance", "semantic")))
        answers.append((result.labels["instance"], result.labels["semantic"], preparation.refinement.loss,
                        preparation.adaptation.losses))
    (inst_a, sem_a, loss_a, adapt_a), (inst_b, sem_b, loss_b, adapt_b) = answers
    assert np.array_equal(inst_a, inst_b) and np.array_equal(sem_a, sem_b)
    assert loss_a == loss_b and adapt_a == adapt_b
