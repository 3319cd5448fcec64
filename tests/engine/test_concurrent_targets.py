"""Several targets at once (sine_model.engine.concurrent_targets): order, errors, bounds, threads, closing.

No test here depends on speed: workers are made to overlap or wait with events and barriers (their
timeouts only turn a deadlock into a failure, or end a wait for an overlap that must not come).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import build_tiny, disk_scene, torch_threads

from sine_model.engine.concurrent_targets import answer_in_order, targets_at_once
from sine_model.engine.inputs import PropagationError
from sine_model.engine.propagator import Propagator
from sine_model.fitting.refiner import fit_refiner

WAIT = 60  # seconds before a missing event counts as a deadlock
HOLD = 0.5  # seconds OverlapProbe holds its first item for a second one to join it


def test_answers_come_in_item_order_when_later_items_finish_first():
    first_may_finish = threading.Event()

    def answer(item):
        if item == 0:
            assert first_may_finish.wait(WAIT)
        if item == 1:
            first_may_finish.set()  # item 1 is done before item 0
        return item * 10

    assert list(answer_in_order(answer, range(5), workers=2, threads_each=1)) == [0, 10, 20, 30, 40]


def test_workers_run_items_at_the_same_time():
    barrier = threading.Barrier(2, timeout=WAIT)  # breaks (and fails) unless two answers overlap

    def answer(item):
        barrier.wait()
        return item

    assert list(answer_in_order(answer, range(4), workers=2, threads_each=1)) == [0, 1, 2, 3]


class OverlapProbe:
    """An answer that records how many items ran at once. It holds item 0 until a second item starts
    beside it (at most :data:`HOLD` seconds: the time bounds only the run where none may start), so items
    let in together are seen together however fast the machine is."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self.lock = threading.Lock()
        self.second = threading.Event()

    def __call__(self, item: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            if self.running > 1:
                self.second.set()
        if item == 0:
            self.second.wait(HOLD)
        with self.lock:
            self.running -= 1
        return item


def test_one_worker_answers_one_item_at_a_time():
    probe = OverlapProbe()
    assert list(answer_in_order(probe, range(6), workers=1, threads_each=1)) == list(range(6))
    assert probe.most == 1
    probe = OverlapProbe()  # the probe sees two workers' items together
    assert list(answer_in_order(probe, range(6), workers=2, threads_each=1)) == list(range(6))
    assert probe.most == 2


def test_items_are_read_ahead_only_one_past_the_workers():
    read: list[int] = []

    def items():
        for k in range(10):
            read.append(k)
            yield k

    answers = answer_in_order(lambda item: item, items(), workers=2, threads_each=1)
    assert next(answers) == 0
    assert len(read) == 3  # two answered at once, one waiting
    assert list(answers) == list(range(1, 10))


def test_a_memory_budget_keeps_items_out_until_it_has_room():
    # each item costs 60 of a budget of 100: never two at once, however many workers
    probe = OverlapProbe()
    out = list(answer_in_order(probe, range(5), workers=3, threads_each=1, cost=lambda item: 60, budget=100))
    assert out == list(range(5)) and probe.most == 1
    # an item larger than the whole budget still runs (alone)
    assert list(answer_in_order(probe, [1], workers=3, threads_each=1, cost=lambda item: 500,
                                budget=100)) == [1]


def test_a_failing_item_is_raised_after_the_answers_before_it():
    def answer(item):
        if item == 2:
            raise ValueError("bad item 2")
        return item

    answers = answer_in_order(answer, range(6), workers=2, threads_each=1)
    assert [next(answers), next(answers)] == [0, 1]
    with pytest.raises(ValueError, match="bad item 2"):
        next(answers)


def test_an_item_the_stream_fails_to_give_is_raised_after_the_answers_before_it():
    def items():
        yield from (0, 1)
        raise PropagationError("target 2 is unreadable")

    answers = answer_in_order(lambda item: item, items(), workers=3, threads_each=1)
    assert [next(answers), next(answers)] == [0, 1]
    with pytest.raises(PropagationError, match="target 2"):
        next(answers)


def test_closing_waits_for_the_running_items_and_starts_no_more():
    started: list[int] = []
    finished: list[int] = []

    def answer(item):
        started.append(item)
        finished.append(item)
        return item

    with torch_threads(2):
        answers = answer_in_order(answer, range(10), workers=2, threads_each=1)
        assert next(answers) == 0
        answers.close()
        assert sorted(finished) == sorted(started)  # nothing of ours still runs
        assert torch.get_num_threads() == 2
    assert set(started) <= {0, 1, 2}  # items 3.. were never read, so never started


def test_workers_use_their_share_of_threads_and_the_callers_count_is_restored():
    with torch_threads(3):
        seen = list(answer_in_order(lambda item: torch.get_num_threads(), range(4), workers=2,
                                    threads_each=1))
        assert seen == [1, 1, 1, 1]
        assert torch.get_num_threads() == 3
        fresh: list[int] = []
        thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert fresh == [3]  # a new thread starts with the caller's count again


def test_targets_at_once_follows_threads_requests_and_the_run_size():
    assert targets_at_once(2, None, None) == 2
    assert targets_at_once(2, None, 1) == 1  # a single target keeps all threads
    assert targets_at_once(4, 3, 10) == 3
    assert targets_at_once(1, None, 5) == 1
    with pytest.raises(ValueError, match="targets_at_once must be >= 1"):
        targets_at_once(2, 0, None)
    with pytest.raises(ValueError, match="targets_at_once must be >= 1"):
        Propagator(build_tiny(), device="cpu", pad=112, targets_at_once=0)


@pytest.fixture(scope="module")
def refined():
    """A tiny propagator whose refiner answers from the image alone (no model pass)."""
    torch.manual_seed(0)
    with torch_threads(1):
        propagator = Propagator(build_tiny(), device="cpu", pad=112, instance_source="semantic",
                                id_source="matching", num_threads=2)
        fit_refiner(propagator, [disk_scene(0)], max_steps=20, use_model_maps=False, forest=True)
    return propagator


def answered_by(propagator, targets, **kwargs):
    names: set[str] = set()
    original = propagator._assemble

    def recording(*args, **kw):
        names.add(threading.current_thread().name)
        return original(*args, **kw)

    propagator._assemble = recording
    try:
        results = list(propagator.propagate(targets, **kwargs))
    finally:
        del propagator._assemble
    return results, names


@pytest.mark.parametrize("at_once", [2, 3])
def test_the_engine_answers_refiner_targets_at_once_with_the_same_answers(refined, at_once):
    targets = [disk_scene(seed)[0] for seed in range(1, 6)]
    with torch_threads(1):
        refined.targets_at_once = 1
        sequential, names = answered_by(refined, targets)
        assert names == {threading.current_thread().name}
        refined.targets_at_once = at_once
        concurrent, names = answered_by(refined, targets)
    refined.targets_at_once = None
    assert len(names) == at_once and all(name.startswith("sine-target") for name in names)
    assert [r.index for r in concurrent] == list(range(5))
    for a, b in zip(sequential, concurrent, strict=True):
        for mode in ("id", "instance", "semantic"):
            assert np.array_equal(a.labels[mode], b.labels[mode])
        assert [(s.mode, s.label, s.score) for s in a.scores] == \
            [(s.mode, s.label, s.score) for s in b.scores]


def test_the_engine_answers_one_at_a_time_where_the_model_runs_or_one_target_is_given(refined):
    targets = [disk_scene(seed)[0] for seed in range(1, 4)]
    caller = {threading.current_thread().name}
    refined.targets_at_once = 3
    try:
        _, names = answered_by(refined, targets, keep_maps=True)  # kept maps need the model pass
        assert names == caller
        _, names = answered_by(refined, targets[:1])  # one target keeps every thread
        assert names == caller
        _, names = answered_by(refined, targets)
        assert names != caller
    finally:
        refined.targets_at_once = None


def test_a_bad_target_among_concurrent_ones_is_refused_after_the_good_ones(refined):
    targets = [disk_scene(1)[0], disk_scene(2)[0], np.zeros((96, 96, 5), np.uint8), disk_scene(3)[0]]
    refined.targets_at_once = 2
    try:
        results = refined.propagate(targets)
        assert [next(results).index, next(results).index] == [0, 1]
        with pytest.raises(PropagationError, match="target 2"):
            next(results)
    finally:
        refined.targets_at_once = None
