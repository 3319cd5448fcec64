"""Test-time adaptation: time budget, frozen encoder, the caller's model untouched, Propagator helper."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import build_embedded

from sine_model import EMBEDDED_PRESET, get_preset
from sine_model.cli.train import add_train_commands
from sine_model.engine.propagator import Propagator
from sine_model.fitting import adaptation as adapt_module
from sine_model.fitting.adaptation import adapt, adapt_propagator, average_weights, trainable_for_adaptation
from sine_model.training.pairs import PairItem

TINY = dict(dim=32, num_heads=2, ffn_dim=64, num_decoder_layers=2, num_queries=8, encoder_dim=32,
            channels=(8, 16, 32))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_embedded(seed: int = 0):
    torch.manual_seed(seed)
    return build_embedded("cnn", **TINY).eval()


def blob_pair(seed: int = 0, shape=(72, 72)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a few bright disks and their instance labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    for k in range(1, 6):
        cy, cx = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 25) & (labels == 0)] = k
    image = (labels > 0) * 0.6 + rng.uniform(0, 0.2, shape)
    return image.astype(np.float32), labels


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict, prefix: str = "") -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


class StepClock:
    """A ``time`` stand-in whose clock moves only when a training step runs, by ``step`` seconds each."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def perf_counter(self) -> float:
        return self.now


def test_respects_the_time_budget(monkeypatch):
    # adapt's clock is made to advance 0.5 s per step and not otherwise, so the budget binds after the
    # same number of steps on any machine: a wall-clock bound would measure the machine's load instead.
    clock = StepClock(0.5)
    real_losses = adapt_module.episode_losses

    def timed_losses(*args, **kwargs):
        clock.now += clock.step
        return real_losses(*args, **kwargs)

    monkeypatch.setattr(adapt_module, "time", clock)
    monkeypatch.setattr(adapt_module, "episode_losses", timed_losses)
    result = adapt(tiny_embedded(), [blob_pair()], seconds=2.0, pad=56)
    # a step starts only while it is expected to end within the budget: 2.0 s / 0.5 s = 4 steps
    assert result.steps == 4 and len(result.losses) == 4
    assert result.seconds == 2.0
    assert all(np.isfinite(result.losses))


def test_copy_by_default_encoder_frozen_and_eval_mode():
    model = tiny_embedded()
    model.image_encoder.neck[0].weight.requires_grad_(False)  # a caller's flag must survive
    before = snapshot(model)
    result = adapt(model, [blob_pair(), blob_pair(1)], seconds=60, max_steps=3, pad=56)
    assert result.steps == 3 and result.model is not model
    assert same(before, snapshot(model))  # the caller's model is untouched
    after = snapshot(result.model)
    assert same(before, after, "image_encoder.encoder.")  # bitwise
    assert not result.encoder_changed
    assert not same(before, after, "image_encoder.neck.2")
    assert not same(before, after, "transformer_decoder.")
    assert not result.model.training and not any(m.training for m in result.model.modules())
    assert not model.image_encoder.neck[0].weight.requires_grad
    assert not result.model.image_encoder.neck[0].weight.requires_grad
    assert all(p.requires_grad for p in result.model.image_encoder.encoder.parameters())
    expected = sum(p.numel() for p in trainable_for_adaptation(model))
    assert result.trained_parameters == expected


def test_inplace_adapts_the_given_model():
    model = tiny_embedded()
    before = snapshot(model)
    result = adapt(model, [PairItem(*blob_pair())], seconds=60, max_steps=2, pad=56, inplace=True)
    assert result.model is model
    assert not same(before, snapshot(model), "transformer_decoder.")
    assert same(before, snapshot(model), "image_encoder.encoder.")


def test_adaptation_lowers_the_loss_on_its_references():
    model = tiny_embedded()
    result = adapt(model, [blob_pair()], seconds=120, max_steps=30, pad=56, lr=1e-3, seed=1)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < first, result.losses


def test_bad_arguments():
    model = tiny_embedded()
    with pytest.raises(ValueError, match="seconds must be > 0"):
        adapt(model, [blob_pair()], seconds=0)
    with pytest.raises(ValueError, match="non-empty sequence"):
        adapt(model, [], seconds=1)
    with pytest.raises(ValueError, match=r"labels \[.*\] of reference 0 have no class"):
        adapt(model, [blob_pair()], seconds=1, classes={1: 1})


def test_adapt_propagator_keeps_the_feature_cache(tiny_model):
    pairs = [blob_pair(0, (112, 112))]
    original = snapshot(tiny_model)
    propagator = Propagator(tiny_model, device="cpu", pad=112)
    propagator.set_references(pairs)
    cached, hits = len(propagator.cache), propagator.cache.hits
    tokens_before = propagator._tokens.id_tokens.clone()
    result = adapt_propagator(propagator, pairs, seconds=60, max_steps=2)
    assert result.steps == 2 and propagator.model is result.model and result.model is not tiny_model
    assert same(original, snapshot(tiny_model))
    assert len(propagator.cache) == cached and propagator.cache.hits > hits  # re-encoded from the cache
    assert not torch.equal(tokens_before, propagator._tokens.id_tokens)  # with the adapted neck
    out = next(iter(propagator.propagate([blob_pair(1, (112, 112))[0]])))
    assert out.labels["instance"].shape == (112, 112)


def test_average_weights_is_the_mean_of_float_tensors():
    first, second = tiny_embedded(0), tiny_embedded(1)
    mean = average_weights([first, second])
    assert mean is not first and mean is not second and not mean.training
    a, b, m = snapshot(first), snapshot(second), snapshot(mean)
    for key, value in m.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2)
        else:
            assert torch.equal(value, a[key])
    assert same(snapshot(tiny_embedded(0)), a)  # the inputs are untouched
    with pytest.raises(ValueError, match="at least one model"):
        average_weights([])
    other = build_embedded("cnn", **{**TINY, "num_queries": 4})
    with pytest.raises(ValueError, match="one architecture"):
        average_weights([first, other])


def test_cross_fit_adapts_one_copy_per_reference_half(tiny_model, monkeypatch):
    # Two references: the first has objects in both halves (two folds), the second in one half only
    # (trained on whole by both sides, predicted by nobody). Each side must see only its own halves.
    seen: list[list[tuple[np.ndarray, np.ndarray]]] = []
    real_adapt = adapt_module.adapt

    def recording_adapt(model, pairs, seconds, **options):
        seen.append([(np.asarray(i), np.asarray(lab)) for i, lab in pairs])
        return real_adapt(model, pairs, seconds, **options)

    monkeypatch.setattr(adapt_module, "adapt", recording_adapt)
    split = blob_pair(0, (112, 112))
    one_sided = blob_pair(1, (112, 112))
    one_sided = (one_sided[0], np.where(np.arange(112)[:, None] < 50, one_sided[1], 0)
                 * (np.arange(112)[None, :] < 50))
    original = snapshot(tiny_model)
    propagator = Propagator(tiny_model, device="cpu", pad=112)
    result = adapt_propagator(propagator, [split, one_sided], seconds=60, max_steps=2, cross_fit=True)
    assert len(seen) == 2 and result.steps == 4
    first, second = seen
    assert first[0][1].shape == second[0][1].shape == (56, 112)  # the halves of the split reference
    halves = [split[1][:56], split[1][56:]]
    assert np.array_equal(first[0][1], halves[0]) and np.array_equal(second[0][1], halves[1])
    assert np.array_equal(first[1][1], one_sided[1]) and np.array_equal(second[1][1], one_sided[1])
    # fold k (reference_folds' order: first half -> second, second -> first) is predicted by the
    # model that did not train on its held-out half; the engine gets their weight average
    left, right = result.fold_models
    assert left is not right and propagator.model is result.model and result.model not in (left, right)
    average = snapshot(average_weights([left, right]))
    assert same(average, snapshot(result.model))
    assert not same(snapshot(left), snapshot(right), "transformer_decoder.")
    assert same(original, snapshot(tiny_model))  # the caller's model is untouched


def test_cross_fit_without_folds_is_plain_adaptation(tiny_model):
    image, labels = blob_pair(2, (112, 112))
    labels = np.where((np.arange(112)[:, None] < 50) & (np.arange(112)[None, :] < 50), labels, 0)
    propagator = Propagator(tiny_model, device="cpu", pad=112)
    result = adapt_propagator(propagator, [(image, labels)], seconds=60, max_steps=2, cross_fit=True)
    assert result.fold_models is None and result.steps == 2 and propagator.model is result.model


def _adapt_cli_setup(tmp_path, monkeypatch) -> tuple:
    """A tiny embedded model saved as the start weights, the blob reference written as TIFFs in
    ``tmp_path`` (``ref.tif``, ``ref_labels.tif``), and a parser holding the ``adapt`` command."""
    import tifffile

    from sine_model.hub.presets import PRESETS, LicenceNotice, Preset, WeightSource
    from sine_model.hub.pretrained import save_preset_weights

    monkeypatch.setenv("SINE_CACHE_DIR", str(tmp_path / "cache"))
    architecture = replace(get_preset(EMBEDDED_PRESET).model, kind="cnn", **TINY)
    preset = Preset(name="test-embedded-tiny", description="tiny", model=architecture,
                    weights=WeightSource(kind="url", location="https://example.invalid/w"),
                    licence=LicenceNotice("CC0", "none"))
    monkeypatch.setitem(PRESETS, preset.name, preset)
    start = tmp_path / "start.safetensors"
    save_preset_weights(tiny_embedded(), preset, start)
    image, labels = blob_pair()
    tifffile.imwrite(tmp_path / "ref.tif", image)
    tifffile.imwrite(tmp_path / "ref_labels.tif", labels)
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    return start, parser


def test_cli_adapt_writes_loadable_weights(tmp_path, monkeypatch):
    from sine_model.hub.pretrained import from_pretrained

    start, parser = _adapt_cli_setup(tmp_path, monkeypatch)
    out = tmp_path / "adapted.safetensors"
    args = parser.parse_args(["adapt", "--ref", str(tmp_path / "ref.tif"), "--ref-labels",
                              str(tmp_path / "ref_labels.tif"), "--model", str(start), "--steps", "2",
                              "--pad", "56", "--out", str(out), "--device", "cpu"])
    assert args.handler(args) == 0
    adapted = from_pretrained(out)
    start_state = from_pretrained(start).state_dict()
    assert not same(start_state, adapted.state_dict(), "transformer_decoder.")
    assert same(start_state, adapted.state_dict(), "image_encoder.encoder.")
    with pytest.raises(FileExistsError):
        args.handler(args)


def test_cli_adapt_budget_is_steps_and_repeats(tmp_path, monkeypatch, capsys):
    from sine_model.cli import train as train_cli
    from sine_model.hub.pretrained import from_pretrained

    assert train_cli.ADAPT_STEPS == adapt_module.ADAPT_STEPS  # the CLI's default is the library's
    assert train_cli.ADAPT_MAX_SECONDS == adapt_module.MAX_ADAPT_SECONDS
    start, parser = _adapt_cli_setup(tmp_path, monkeypatch)
    common = ["adapt", "--ref", str(tmp_path / "ref.tif"), "--ref-labels", str(tmp_path / "ref_labels.tif"),
              "--model", str(start), "--pad", "56", "--device", "cpu"]
    states = []
    for run in ("a", "b"):
        out = tmp_path / f"{run}.safetensors"
        args = parser.parse_args([*common, "--steps", "3", "--out", str(out)])
        assert args.handler(args) == 0
        assert "in 3 steps" in capsys.readouterr().out
        states.append(from_pretrained(out).state_dict())
    assert same(states[0], states[1], "transformer_decoder.")  # seeded steps: the same weights twice
    for bad, words in ((["--steps", "0"], "positive whole number of steps"),
                       (["--seconds", "60"], "use --steps N"), (["--max-seconds", "0"], "positive")):
        with pytest.raises(SystemExit):
            parser.parse_args([*common, "--out", str(tmp_path / "c.safetensors"), *bad])
        assert words in capsys.readouterr().err


def test_cli_adapt_says_when_the_safety_cap_cut_it_short(tmp_path, monkeypatch, capsys):
    from sine_model.cli import train as train_cli

    seen = {}

    def fake_adapt(model, pairs, seconds, **options):
        seen.update(options, seconds=seconds)
        return adapt_module.AdaptResult(model=model, steps=1, seconds=seconds, losses=[1.0], cut_short=True)

    monkeypatch.setattr(adapt_module, "adapt", fake_adapt)
    monkeypatch.setattr(train_cli, "_preset_of", lambda name: EMBEDDED_PRESET)
    monkeypatch.setattr("sine_model.hub.pretrained.from_pretrained", lambda *a, **k: tiny_embedded())
    monkeypatch.setattr("sine_model.hub.pretrained.save_preset_weights", lambda *a: "0" * 64)
    import tifffile

    image, labels = blob_pair()
    tifffile.imwrite(tmp_path / "ref.tif", image)
    tifffile.imwrite(tmp_path / "ref_labels.tif", labels)
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["adapt", "--ref", str(tmp_path / "ref.tif"), "--ref-labels",
                              str(tmp_path / "ref_labels.tif"), "--steps", "50", "--max-seconds", "5",
                              "--out", str(tmp_path / "x.safetensors"), "--device", "cpu"])
    assert args.handler(args) == 0
    assert seen["max_steps"] == 50 and seen["seconds"] == 5.0
    assert "safety cap cut it short of 50 steps" in capsys.readouterr().out
