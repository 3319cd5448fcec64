"""Training loop: config files, schedule, optimizer groups, overfitting, checkpoints, resume, CLI.

Everything runs a tiny embedded model on 56-pixel synthetic episodes, on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sine_model.cli.train import add_train_commands
from sine_model.training.checkpoints import list_checkpoints
from sine_model.training.config import ConfigError, config_from_dict, load_config
from sine_model.training.loop import (
    Trainer,
    build_criterion,
    build_model_for_training,
    build_sampler,
    episode_losses,
    lr_at,
    param_groups,
)

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_dict(**top) -> dict:
    data = {
        "seed": 3,
        "steps": 4,
        "episodes_per_step": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "model": {"kind": "cnn", "dim": 32, "num_heads": 2, "ffn_dim": 64, "num_decoder_layers": 2,
                  "num_queries": 8, "encoder_dim": 32, "channels": [8, 16, 32]},
        "optim": {"warmup_steps": 1, "lr": 1e-3},
        "loss": {"num_points": 64},
        "data": {
            "pad": 56,
            "augment": {"scale_range": [0.8, 1.2]},
            "synthetic": [{"n_groups": 2, "images_per_group": 2, "seed": 1,
                           "scene": {"shape": [64, 64], "n_classes": 2, "objects_per_class": [2, 3],
                                     "radius_range": [3.0, 6.0]}}],
        },
    }
    data.update(top)
    return data


def tiny_config(**top):
    return config_from_dict(tiny_dict(**top))


def flat_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------- config


def test_load_toml_and_json_with_paths_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    toml = tmp_path / "sub" / "run.toml"
    toml.write_text("steps = 7\nout_dir = 'out'\n[model]\nkind = 'filterbank'\n"
                    "[[data.folders]]\nroot = '../images'\nexclude = ['a']\n")
    config = load_config(toml)
    assert config.steps == 7 and config.model.kind == "filterbank"
    assert Path(config.data.folders[0].root) == tmp_path / "sub" / ".." / "images"
    assert Path(config.out_dir) == tmp_path / "sub" / "out"
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps(tiny_dict()))
    assert load_config(as_json).model.channels == (8, 16, 32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stepz": 3}, r"unknown key\(s\) \['stepz'\]; allowed: .*steps"),
        ({"steps": "many"}, "steps: expected an integer"),
        ({"steps": 0}, "steps must be > 0"),
        ({"model": {"kind": "resnet"}}, "model: kind must be one of"),
        ({"model": {"dim": 30, "num_heads": 4}}, "divisible by num_heads"),
        ({"optim": {"lr": -1.0}}, "optim: lr must be > 0"),
        ({"optim": {"betas": [0.9]}}, "optim.betas: expected 2 values"),
        ({"data": {"pad": 100, "synthetic": [{}]}}, "pad must be a positive multiple of 14"),
        ({"data": {"pad": 56}}, "no data source"),
        ({"data": {"synthetic": [{"scene": {"colour": 1}}]}}, r"scene.*unknown keys \['colour'\]"),
        ({"data": {"augment": {"hflip": 2.0}, "synthetic": [{}]}}, "data.augment: .*probability"),
        ({"data": {"folders": [{"exclude": []}]}}, r"data.folders\[0\]: root is required"),
        ({"time_budget_minutes": True}, "time_budget_minutes: expected"),
    ],
)
def test_config_errors_are_clear(change, message):
    data = tiny_dict()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "data":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, source="my.toml")


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config(bad)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("steps: 1")
    with pytest.raises(ConfigError, match="use .toml or .json"):
        load_config(yaml)
    nodata = tmp_path / "nodata.json"
    nodata.write_text("{}")
    with pytest.raises(ConfigError, match="nodata.json: .*no data source"):
        load_config(nodata)


def test_exclude_splits_reads_heldout_groups(tmp_path):
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"cells": {"heldout_groups": ["b"]}}))
    config = config_from_dict(tiny_dict(data={"folders": [{"root": "cells", "exclude": ["a"],
                                                           "exclude_splits": "splits.json"}]}),
                              base_dir=tmp_path)
    assert config.data.folders[0].excluded_groups() == ["a", "b"]
    missing = config_from_dict(tiny_dict(data={"folders": [{"root": "x", "exclude_splits": "none.json"}]}),
                               base_dir=tmp_path)
    with pytest.raises(ValueError, match="does not exist: create it or list the held-out groups"):
        missing.data.folders[0].excluded_groups()
    folders = [{"root": "x", "exclude_splits": "splits.json"}]
    wrong_key = config_from_dict(tiny_dict(data={"folders": folders}), base_dir=tmp_path)
    with pytest.raises(ValueError, match="no 'x' entry"):
        wrong_key.data.folders[0].excluded_groups()


def test_example_config_loads_and_holds_out_the_eval_groups():
    from sine_model.hub.presets import EMBEDDED_PRESET, get_preset

    config = load_config(REPO / "configs" / "embedded.toml")
    preset = get_preset(EMBEDDED_PRESET)
    # the recipe builds exactly the shipped preset's architecture, at the preset's input side
    assert config.model.architecture() == preset.model and config.data.pad == preset.input.pad_size
    assert config.optim.lr == 5e-4 and config.optim.weight_decay == 0.05 and config.optim.grad_clip == 1.0
    folder = config.data.folders[0]
    assert Path(folder.root).name == "dsb2018_stage1_test"
    splits = json.loads((REPO / "bench" / "eval_splits.json").read_text())
    assert set(splits["dsb2018_stage1_test"]["heldout_groups"]) <= set(folder.excluded_groups())


# --------------------------------------------------------------------------------- optimisation


def test_lr_schedule_warmup_then_linear_decay():
    assert lr_at(0, 1.0, 4, 10) == pytest.approx(0.25)
    assert lr_at(3, 1.0, 4, 10) == pytest.approx(1.0)
    assert lr_at(4, 1.0, 4, 10) == pytest.approx(1.0)
    assert lr_at(7, 1.0, 4, 10) == pytest.approx(0.5)
    assert lr_at(10, 1.0, 4, 10) == 0.0
    assert lr_at(0, 2.0, 0, 4) == pytest.approx(2.0)


def test_no_weight_decay_for_layernorm_and_embedding_only():
    model = build_model_for_training(tiny_config().model)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "transformer_decoder.decoder_norm.weight" in exempt
    assert "transformer_decoder.query_feat.weight" in exempt
    assert "transformer_decoder.transformer_layers.0.transformer_self_attention_layer.norm.bias" in exempt
    assert "image_encoder.neck.1.weight" in decayed  # LayerNorm2d decays (official)
    assert "transformer_decoder.temp" in decayed and "transformer_decoder.logit_scale" in decayed
    assert exempt | decayed == set(names.values()) and not exempt & decayed


def test_overfits_a_single_episode():
    config = tiny_config(steps=20, episodes_per_step=1, optim={"lr": 1e-3, "warmup_steps": 0})
    sampler = build_sampler(config.data)
    episode = sampler.sample(np.random.default_rng(5))

    class Fixed:
        def sample(self, rng=None):
            return episode

    trainer = Trainer(config, "unused", device="cpu", sampler=Fixed(), progress=False)

    def fixed_loss() -> float:
        with torch.no_grad():
            losses = episode_losses(trainer.model.eval(), [episode], trainer.criterion, trainer.device,
                                    torch.Generator().manual_seed(0))
        return float(losses["total"])

    before = fixed_loss()
    for _ in range(config.steps):
        trainer.train_step()
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)


# ------------------------------------------------------------------------- checkpoints and resume


def test_checkpoints_log_and_bitwise_resume(tmp_path):
    config = tiny_config()
    full = Trainer(config, tmp_path / "full", device="cpu", progress=False)
    result = full.run()
    assert result.step == 4 and result.stopped_by == "steps"
    out = tmp_path / "full"
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_0000002", "step_0000004"]
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"):
        assert (out / "checkpoints" / "step_0000004" / name).is_file()
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "loss_mask", "loss_dice", "loss_ce_ins", "loss_ce_id", "lr", "seconds"} <= set(rows[0])
    assert (out / "log.csv").read_text().splitlines()[0].startswith("step,lr,seconds")

    part = Trainer(config, tmp_path / "part", device="cpu", progress=False)
    assert part.run(max_steps=2).stopped_by == "max_steps"
    # A further step before "crashing" is logged but not checkpointed: resume must drop it.
    part.train_step()
    with open(tmp_path / "part" / "log.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    resumed = Trainer(config, tmp_path / "part", device="cpu", progress=False)
    assert resumed.run(resume=True).step == 4
    expected, got = flat_state(full.model), flat_state(resumed.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    part_rows = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in part_rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in part_rows] == [r["loss"] for r in rows]


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    config = tiny_config(steps=1)
    Trainer(config, tmp_path, device="cpu", progress=False).run()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(config, tmp_path, device="cpu", progress=False).run()


def test_time_budget_stops_training(tmp_path):
    config = tiny_config(steps=1000, time_budget_minutes=1e-6)
    result = Trainer(config, tmp_path, device="cpu", progress=False).run()
    assert result.stopped_by == "time" and result.step == 1
    assert (tmp_path / "model.safetensors").is_file()


def test_build_model_init_from_file(tmp_path):
    from safetensors.torch import save_file

    config = tiny_config()
    model = build_model_for_training(config.model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    init = {**tiny_dict()["model"], "init": "w.safetensors"}
    loaded = build_model_for_training(config_from_dict(tiny_dict(model=init), base_dir=tmp_path).model)
    expected = model.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in loaded.state_dict().items())
    other = config_from_dict(tiny_dict(model={"kind": "cnn", "init": "w.safetensors"}), base_dir=tmp_path)
    with pytest.raises(ValueError, match="does not fit"):
        build_model_for_training(other.model)


def test_criterion_follows_the_config():
    criterion = build_criterion(tiny_config().loss)
    assert criterion.num_points == 64 and criterion.weights["loss_mask"] == 5.0


# ------------------------------------------------------------------------------------------ CLI


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_train_and_resume(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_dict(steps=2)))
    assert run_cli(["train", str(config), "--out", str(tmp_path / "run"), "--device", "cpu",
                    "--no-progress"]) == 0
    assert "Stopped at step 2 (steps)" in capsys.readouterr().out
    assert run_cli(["train", str(config), "--out", str(tmp_path / "run"), "--steps", "3", "--resume",
                    "--no-progress"]) == 0
    rows = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3]


def test_exported_model_loads_by_path_with_its_architecture(tmp_path):
    from sine_model.hub.presets import EMBEDDED_PRESET, get_preset
    from sine_model.hub.pretrained import META_TRAINED_MODEL, KeyMismatchError, from_pretrained

    trainer = Trainer(tiny_config(steps=1), tmp_path / "run", device="cpu", progress=False)
    trainer.run()
    path = tmp_path / "run" / "model.safetensors"
    model = from_pretrained(str(path))
    assert not model.training and model.transformer_decoder.num_queries == 8
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.preset == get_preset(EMBEDDED_PRESET)  # the embedded input side
    # an export whose tensors do not fit the recorded architecture is refused, naming the file
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    state.pop(next(iter(state)))
    broken = tmp_path / "broken.safetensors"
    record = {META_TRAINED_MODEL: json.dumps(trainer.config.to_dict()["model"])}
    save_file(state, broken, metadata={"format": "pt", **record})
    with pytest.raises(KeyMismatchError, match="broken.safetensors"):
        from_pretrained(str(broken))
