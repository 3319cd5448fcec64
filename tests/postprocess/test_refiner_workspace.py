"""The refiner's per-thread feature buffer: reused between images, never stale, freed when a run ends."""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import torch
from conftest import build_tiny, disk_scene, torch_threads

from sine_model.engine.propagator import Propagator
from sine_model.fitting.refiner import fit_refiner
from sine_model.postprocess.pixel_refiner import PixelRefiner


def images(seed: int, shape=(40, 56)) -> np.ndarray:
    return np.random.default_rng(seed).random((*shape, 3), dtype=np.float32)


def refiner() -> PixelRefiner:
    torch.manual_seed(0)
    return PixelRefiner([1, 2], use_model_maps=False)


def maps(refined) -> tuple[np.ndarray, ...]:
    return refined.probs, refined.label_map, refined.seeds


def test_refine_reuses_one_buffer_per_thread_and_gives_fresh_answers():
    a, b, c = images(0), images(1), images(2, shape=(30, 20))
    reused = refiner()
    answers = [maps(reused.refine(x, None)) for x in (a, b, a, c, b)]
    assert list(reused._workspace) == [threading.get_ident()]  # one buffer, this thread's (resized for c)
    for x, answer in zip((a, b, a, c, b), answers, strict=True):
        for got, fresh in zip(answer, maps(refiner().refine(x, None)), strict=True):
            assert np.array_equal(got, fresh)  # nothing of the previous image is left in it
    reused.release_workspace()
    assert not reused._workspace


def test_strips_do_not_reuse_unless_asked():
    # callers keeping several strips' features (the refiner's training) get their own tensors
    r = refiner()
    (_, first), = list(r.strips(images(0), None))
    (_, second), = list(r.strips(images(1), None))
    assert not r._workspace and first.data_ptr() != second.data_ptr()


def test_copies_and_pickles_carry_no_buffer():
    r = refiner()
    r.refine(images(0), None)
    assert r._workspace
    for clone in (copy.deepcopy(r), pickle.loads(pickle.dumps(r))):
        assert clone._workspace == {}
        fresh = refiner().refine(images(1), None).label_map
        assert np.array_equal(clone.refine(images(1), None).label_map, fresh)


def test_the_engine_frees_the_buffers_when_a_run_ends():
    torch.manual_seed(0)
    with torch_threads(1):
        propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic",
                                num_threads=2)
        fit_refiner(propagator, [disk_scene(0)], max_steps=5, use_model_maps=False)
    targets = [disk_scene(seed)[0] for seed in (1, 2, 3)]
    for at_once in (1, 2):
        propagator.targets_at_once = at_once
        results = propagator.propagate(targets, modes=("instance",))
        next(results)
        assert propagator.refiner._workspace  # held while the run goes on
        assert len(list(results)) == 2
        assert not propagator.refiner._workspace
        results = propagator.propagate(targets, modes=("instance",))
        next(results)
        results.close()  # a run stopped early frees them too
        assert not propagator.refiner._workspace
