"""Parity of what users run: the preset's recipe on the bundled sample matches the proposals saved before.

``tests/data/recipe_parity.npz`` was written by ``bench/parity_fixture.py --recipe`` from the code before
the second issue-22 stop (commit recorded in the file): ``sine-embedded`` prepared by its fitting recipe
(calibration, the refiner's MLP and forest) on the sample reference, then the three sample targets in
every mode, all on one thread. The same run today must stay within the tolerances of
``parity_checks.py``; answering several targets at once (each on its own thread) must give exactly the
answers of one target at a time.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import torch_threads
from parity_checks import CHECKS, FIXTURES, MODES, load_saved

FIXTURE = FIXTURES / "recipe_parity.npz"


@pytest.fixture(scope="module")
def saved():
    return load_saved(FIXTURE)


@pytest.fixture(scope="module")
def prepared():
    """The sample and a propagator prepared by the preset's recipe on one thread."""
    from sine_model import from_pretrained
    from sine_model.engine.propagator import Propagator
    from sine_model.fitting.preparation import ReferencePreparation
    from sine_model.sample_data import load_sample

    sample = load_sample()
    with torch_threads(1):
        prop = Propagator(from_pretrained("sine-embedded"), device="cpu", num_threads=1)
        ReferencePreparation(prop, [(sample.reference, sample.reference_labels)]).run()
    return sample, prop


def run(prop, targets, at_once: int) -> tuple[dict[str, np.ndarray], set[str]]:
    """Label maps per mode of ``targets`` answered ``at_once`` at a time, and the threads that answered."""
    threads: set[str] = set()
    assemble = prop._assemble

    def recording(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return assemble(*args, **kwargs)

    prop.targets_at_once, prop._assemble = at_once, recording
    try:
        with torch_threads(1):
            results = list(prop.propagate(targets, modes=MODES, stack_axis=0))
    finally:
        del prop._assemble
    return {m: np.stack([r.labels[m].astype(np.uint16) for r in results]) for m in MODES}, threads


@pytest.fixture(scope="module")
def one_at_a_time(prepared):
    sample, prop = prepared
    return run(prop, sample.targets, 1)


def test_the_recipe_needs_no_model_pass_on_the_sample(prepared):
    """The fixture's path: the refiner answers from the image alone (what the speed work relies on)."""
    _, prop = prepared
    assert prop.refiner is not None and not prop.refiner.use_model_maps
    assert not prop._model_pass_needed(prop._model_modes(MODES))


@pytest.mark.parametrize("mode", MODES)
def test_proposals_match_the_saved_ones(saved, one_at_a_time, mode):
    current, _ = one_at_a_time
    assert current[mode].shape == saved[mode].shape
    problems = [f"target {t}: {line}" for t in range(len(saved[mode]))
                for line in CHECKS[mode](saved[mode][t], current[mode][t])]
    assert not problems, f"{mode} proposals differ from {FIXTURE.name}:\n" + "\n".join(problems)


def test_the_saved_proposals_have_objects(saved):
    """The comparison means something: every target has instances and a semantic region."""
    for t in range(len(saved["instance"])):
        assert len(np.unique(saved["instance"][t])) > 10
        assert saved["semantic"][t].any()


def test_targets_at_once_give_the_answers_of_one_at_a_time(prepared, one_at_a_time):
    sample, prop = prepared
    sequential, sequential_threads = one_at_a_time
    concurrent, concurrent_threads = run(prop, sample.targets, 3)
    assert sequential_threads == {threading.current_thread().name}
    assert len(concurrent_threads) == 3 and all(t.startswith("sine-target") for t in concurrent_threads)
    for mode in MODES:
        np.testing.assert_array_equal(concurrent[mode], sequential[mode], err_msg=mode)
