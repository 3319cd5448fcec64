"""Intra-op threads chosen on purpose: explicit option > SINE_NUM_THREADS > usable cores minus reserved."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny

from sine_model.engine.device import THREADS_ENV, choose_num_threads, set_num_threads, usable_cores
from sine_model.engine.propagator import Propagator
from sine_model.engine.tiling import auto_batch_size


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    yield
    torch.set_num_threads(before)


def test_explicit_count_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert choose_num_threads(2) == 2
    assert choose_num_threads() == 3


def test_default_leaves_reserved_cores_and_never_raises_torch_setting(monkeypatch):
    monkeypatch.setattr("sine_model.engine.device.usable_cores", lambda: 4)
    monkeypatch.setattr("sine_model.engine.device.os.getloadavg", lambda: (0.2, 0.2, 0.2))
    torch.set_num_threads(8)
    assert choose_num_threads() == 4
    assert choose_num_threads(reserve_cores=1) == 3
    assert choose_num_threads(reserve_cores=9) == 1
    torch.set_num_threads(2)  # lowered by the caller (e.g. a scale-out worker): kept
    assert choose_num_threads() == 2


def test_default_leaves_cores_busy_with_other_jobs(monkeypatch):
    monkeypatch.setattr("sine_model.engine.device.usable_cores", lambda: 4)
    torch.set_num_threads(4)
    monkeypatch.setattr("sine_model.engine.device.os.getloadavg", lambda: (2.4, 1.0, 1.0))
    assert choose_num_threads() == 2  # about 2.4 cores taken by other jobs
    monkeypatch.setattr("sine_model.engine.device.os.getloadavg", lambda: (11.0, 9.0, 9.0))
    assert choose_num_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "3")  # an explicit setting is not second-guessed
    assert choose_num_threads() == 3


@pytest.mark.parametrize("text", ["0", "-1", "two"])
def test_bad_environment_value_is_named(monkeypatch, text):
    monkeypatch.setenv(THREADS_ENV, text)
    with pytest.raises(ValueError, match=THREADS_ENV):
        choose_num_threads()


def test_bad_explicit_count_is_refused():
    with pytest.raises(ValueError, match="num_threads"):
        choose_num_threads(0)


def test_propagator_sets_and_reports_its_threads(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    prop = Propagator(build_tiny(), device="cpu", pad=112)
    assert prop.num_threads == 1 and torch.get_num_threads() == 1
    assert set_num_threads(1) == 1
    assert usable_cores() >= 1


def test_automatic_batch_bounds_pixels_per_call():
    assert auto_batch_size(224) == 20 and auto_batch_size(518) == 3 and auto_batch_size(896) == 1
    assert auto_batch_size(4096) == 1
    assert Propagator(build_tiny(), device="cpu", pad=112).batch_size == auto_batch_size(112)
