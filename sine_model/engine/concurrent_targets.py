"""Several targets answered at once, each on its own thread, results in order (:func:`answer_in_order`).

Where the refiner alone answers (the model pass is skipped, nothing links one target to the next) a
target's work is a chain of small steps — filter bank, MLP, forest, watershed, matching — that two
intra-op threads barely speed up: one 512² target took 0.45 s on one thread and 0.32 s on two, while two
targets at once on one thread each took 0.23–0.26 s per target (issue 22, docs/benchmarks.md). So the
engine keeps up to as many targets in flight as it has threads and gives each worker thread its share of
them. The results are yielded in target order, a target's errors are raised where a sequential run
would raise them, and the targets read ahead are bounded by count and by memory.

Torch's intra-op thread count is per OS thread (each worker sets its own) but also sets the count a new
thread starts with; :func:`answer_in_order` restores the caller's count when it ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from sine_model.engine.resources import USABLE_FRACTION, available_bytes, refiner_bytes

__all__ = ["ConcurrentAnswers", "answer_in_order", "targets_at_once"]

Item = TypeVar("Item")
Answer = TypeVar("Answer")


def targets_at_once(num_threads: int, requested: int | None, count: int | None) -> int:
    """How many targets to answer at once.

    Parameters
    ----------
    num_threads : int
        The engine's intra-op threads (the cores it may use).
    requested : int, optional
        An explicit choice (``Propagator(targets_at_once=...)``); None: ``num_threads``.
    count : int, optional
        Targets in the run, where known (a single target keeps all threads to itself).
    """
    if requested is not None and int(requested) < 1:
        raise ValueError(f"targets_at_once must be >= 1, got {requested}")
    at_once = num_threads if requested is None else int(requested)
    if count is not None:
        at_once = min(at_once, count)
    return max(1, at_once)


def answer_in_order(
    answer: Callable[[Item], Answer],
    items: Iterable[Item],
    workers: int,
    threads_each: int,
    cost: Callable[[Item], int] | None = None,
    budget: int | None = None,
) -> Iterator[Answer]:
    """``answer(item)`` for each item, computed ``workers`` at a time in threads, yielded in item order.

    Parameters
    ----------
    answer : callable
        The work for one item (run in a worker thread).
    items : iterable
        Read lazily, in the caller's thread, as workers become free.
    workers : int
        Items answered at once; one more is read ahead and waits, so a worker that finishes while the
        caller handles an answer starts the next item at once.
    threads_each : int
        Torch intra-op threads of each worker thread.
    cost, budget : optional
        Bytes an item needs while in flight, and the most all items in flight may need together; one
        item is always let in, however large.

    Notes
    -----
    As in a sequential loop, the answers before a failing item (or an item the iterable fails to give)
    are yielded first, then its error is raised. Closing the generator cancels the item not started
    and waits for those running (at most ``workers``).
    """
    previous = torch.get_num_threads()
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="sine-target",
                              initializer=torch.set_num_threads, initargs=(max(1, threads_each),))
    in_flight: deque[tuple[Future, int]] = deque()
    try:
        stream = iter(items)
        while True:
            try:
                item = next(stream)
            except StopIteration:
                break
            except Exception:
                while in_flight:  # the targets read before the bad one are answered first
                    yield in_flight.popleft()[0].result()
                raise
            need = cost(item) if cost is not None else 0
            while in_flight and budget is not None and sum(c for _, c in in_flight) + need > budget:
                yield in_flight.popleft()[0].result()
            in_flight.append((pool.submit(answer, item), need))
            while len(in_flight) > workers:  # (the newest waits in the pool's queue for a free worker)
                yield in_flight.popleft()[0].result()
        while in_flight:
            yield in_flight.popleft()[0].result()
    finally:
        for future, _ in in_flight:
            future.cancel()
        pool.shutdown(wait=True)
        torch.set_num_threads(previous)  # the workers' count is also the one new threads would start with


class ConcurrentAnswers:
    """The refiner's answers for several targets at once (a mixin of ``Propagator``)."""

    num_threads: int
    refiner: Any
    _tokens: Any
    #: Targets answered at once where the refiner alone answers (None: one per thread).
    targets_at_once: int | None

    def _answer_concurrently(self, planned: Iterator[tuple[int, np.ndarray, list]], modes: tuple[str, ...],
                             at_once: int) -> Iterator[Any]:
        """The refiner's answers (no model pass) of ``(index, rgb, tiles)`` targets, ``at_once`` at a time
        on ``num_threads // at_once`` threads each, in target order; the targets in flight fit in the
        usable free memory by :func:`~sine_model.engine.resources.refiner_bytes`."""
        assert self.refiner is not None and self._tokens is not None
        tokens, refiner = self._tokens, self.refiner
        free = available_bytes()
        yield from answer_in_order(
            lambda target: self._assemble(target[0], target[1], [], modes, tokens),  # type: ignore[attr-defined]
            planned, at_once, max(1, self.num_threads // at_once),
            cost=lambda target: refiner_bytes(refiner, *target[1].shape[:2]),
            budget=None if free is None else int(USABLE_FRACTION * free))
