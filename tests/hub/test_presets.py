"""Preset registry metadata, the bundled-weights hook, and the ``weights`` CLI (list/verify/import)."""

from __future__ import annotations

import argparse
import socket
from dataclasses import replace

import pytest
import torch
from conftest import TINY_ENCODER, TINY_KWARGS, build_tiny

from sine_model import ENCODER_CONFIGS, ModelConfig
from sine_model.cli.weights import add_weights_commands
from sine_model.hub import pretrained as W
from sine_model.hub.presets import (
    OFFICIAL_PRESET,
    PRESETS,
    InputSpec,
    LicenceNotice,
    Preset,
    WeightSource,
    get_preset,
    list_presets,
    register_preset,
)
from sine_model.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD, RESIZE_RULES


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access in a test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_LICENCE_SHOWN", set())


def tiny_preset(name="tiny-cli", **changes) -> Preset:
    preset = Preset(
        name=name,
        description="tiny test preset",
        model=ModelConfig(kind=TINY_ENCODER, **TINY_KWARGS),
        weights=WeightSource("url", "https://example.invalid/tiny.bin", filename="tiny.bin"),
        licence=LicenceNotice("test licence", "TEST LICENCE NOTICE"),
    )
    return replace(preset, **changes)


def tiny_checkpoint(path, seed=0):
    state = build_tiny(seed).state_dict()
    state["criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    torch.save(state, path)
    return path


# ----------------------------------------------------------------------------- the official preset


def test_official_preset_metadata():
    preset = get_preset(OFFICIAL_PRESET)
    assert preset.official and preset.name == "sine-vitl"
    source = preset.weights
    assert source.kind == "google_drive" and source.location == "1GYQbbUZClbmhVESDLpRwqe-TyijW2kKb"
    assert source.url == "https://drive.google.com/file/d/1GYQbbUZClbmhVESDLpRwqe-TyijW2kKb/view"
    assert source.sha256 is None and source.size_bytes is None  # not published by the authors
    assert "1.3 GB" in source.size_note
    assert preset.licence.show_on_first_load and "academic use" in preset.licence.text
    assert preset.input.pad_size == 896 and preset.input.pad_size % 14 == 0
    assert preset.input.resize_rule in RESIZE_RULES
    assert preset.input.mean == IMAGENET_MEAN and preset.input.std == IMAGENET_STD


def test_official_encoder_sources():
    sources = get_preset(OFFICIAL_PRESET).encoder_weights
    hub = [s for s in sources if s.kind == "hf_hub"]
    assert hub[0].location == "timm/" + ENCODER_CONFIGS["vitl"].timm_name
    assert hub[0].filename == "model.safetensors"
    urls = [s.url for s in sources]
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth" in urls
    assert any(s.location == "facebook/dinov2-large" and s.key_format == "hf" for s in sources)
    assert all(s.licence == "Apache-2.0" for s in sources)


def test_official_architecture_matches_checkpoint_layout():
    """§3.1: 534 keys = 343 encoder + 6 neck + 184 decoder + criterion.empty_weight (dropped)."""
    shapes = W.expected_shapes(get_preset(OFFICIAL_PRESET))
    assert len(shapes) == 533
    count = lambda prefix: sum(k.startswith(prefix) for k in shapes)  # noqa: E731
    assert count("image_encoder.encoder.") == 343
    assert count("image_encoder.neck.") == 6
    assert count("transformer_decoder.") == 184
    assert tuple(shapes["image_encoder.encoder.pos_embed"][0]) == (1, 1370, 1024)
    assert tuple(shapes["image_encoder.encoder.blocks.23.ls2.gamma"][0]) == (1024,)
    assert tuple(shapes["transformer_decoder.query_feat.weight"][0]) == (200, 256)
    assert tuple(shapes["transformer_decoder.temp"][0]) == ()


# ----------------------------------------------------------------------------- registry


def test_unknown_preset_lists_names():
    with pytest.raises(ValueError, match="unknown preset 'nope'.*sine-vitl"):
        get_preset("nope")


def test_register_and_replace(monkeypatch):
    monkeypatch.setattr("sine_model.hub.presets.PRESETS", dict(PRESETS))
    preset = register_preset(tiny_preset())
    assert get_preset("tiny-cli") is preset and preset in list_presets()
    with pytest.raises(ValueError, match="already registered"):
        register_preset(tiny_preset())
    register_preset(tiny_preset(description="new"), replace=True)
    assert get_preset("tiny-cli").description == "new"
    with pytest.raises(TypeError):
        register_preset({"name": "x"})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tiny_preset(name="Bad Name"), "lowercase"),
        (lambda: WeightSource("url", "x", sha256="abc"), "64 lowercase hex"),
        (lambda: WeightSource("bundled", "x.safetensors"), "needs its sha256"),
        (lambda: WeightSource("hf_hub", "org/repo"), "needs a filename"),
        (lambda: WeightSource("ftp", "x"), "unknown weight source kind"),
        (lambda: InputSpec(pad_size=900), "multiple of 14"),
        (lambda: InputSpec(resize_rule="nope"), "unknown resize rule"),
    ],
)
def test_invalid_metadata_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_preset_build_random_weights():
    model = tiny_preset().build()
    assert set(model.state_dict()) == set(W.expected_shapes(tiny_preset()))
    assert tiny_preset().encoder_config == TINY_ENCODER
    assert tiny_preset(model=ModelConfig(kind="cnn")).encoder_config is None


# ----------------------------------------------------------------------------- bundled hook


def test_bundled_preset_loads_from_package_file(tmp_path, monkeypatch):
    model = build_tiny(3)
    staging = tiny_preset(name="tiny-bundled-stage")
    monkeypatch.setitem(PRESETS, staging.name, staging)
    path = tmp_path / "shipped.safetensors"
    digest = W.save_preset_weights(model, "tiny-bundled-stage", path)
    bundled = tiny_preset(
        name="tiny-bundled-stage",
        weights=WeightSource("bundled", str(path), sha256=digest, key_format="sine"),
    )
    monkeypatch.setitem(PRESETS, bundled.name, bundled)
    loaded = W.from_pretrained(bundled.name)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    assert W.installed_weights(bundled.name).bundled
    with pytest.raises(W.WeightsError, match="ships inside napari-sine"):
        W.import_checkpoint(tiny_checkpoint(tmp_path / "x.bin"), preset=bundled.name)
    wrong = replace(bundled, weights=replace(bundled.weights, sha256="0" * 64))
    monkeypatch.setitem(PRESETS, bundled.name, wrong)
    with pytest.raises(W.HashMismatchError):
        W.from_pretrained(bundled.name)


# ----------------------------------------------------------------------------- CLI


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="napari-sine")
    add_weights_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def tiny(monkeypatch):
    preset = tiny_preset()
    monkeypatch.setitem(PRESETS, preset.name, preset)
    return preset


def test_cli_list_and_verify(tiny, tmp_path, capsys):
    assert run_cli(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "sine-vitl  [not installed]" in out and "drive.google.com" in out
    assert "tiny-cli  [not installed]" in out
    assert "sine-embedded  [installed]" in out  # shipped inside the package
    assert run_cli(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert "sine-embedded: OK" in out and "tiny-cli" not in out and "sine-vitl" not in out

    assert (
        run_cli(["weights", "import", str(tiny_checkpoint(tmp_path / "t.bin")), "--preset", tiny.name]) == 0
    )
    sha = W.installed_weights(tiny.name).sha256
    assert sha in capsys.readouterr().out
    assert run_cli(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-cli  [installed]" in out and sha in out and "recorded at import" in out
    assert run_cli(["weights", "verify"]) == 0
    assert f"tiny-cli: OK  sha256 {sha}" in capsys.readouterr().out

    path = W.installed_weights(tiny.name).path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    assert run_cli(["weights", "verify", tiny.name]) == 1
    assert "MISMATCH" in capsys.readouterr().err
    assert run_cli(["weights", "verify", "sine-vitl"]) == 1
    assert "not installed" in capsys.readouterr().err


def test_cli_import_errors(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint at all")
    assert run_cli(["weights", "import", str(bad), "--preset", tiny.name]) == 1
    assert "error:" in capsys.readouterr().err
    assert run_cli(["weights", "import", str(bad), "--preset", "nope"]) == 1
    assert "unknown preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(["weights"])
