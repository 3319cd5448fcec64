"""Safe checkpoint reading and strict checks: pickles refused, corrupt files, keys, prefixes, dtypes.

Every checkpoint is synthetic and made in the test; the cache is a temporary folder (SINE_CACHE_DIR) and
any network access fails the test.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from weights_helpers import assert_same_state, official_state, save, weights_files
from weights_helpers import isolated_fixture as isolated_fixture  # fixture `isolated`, autouse
from weights_helpers import tiny_fixture as tiny_fixture  # fixture `tiny`

from sine_model.hub import pretrained as W

# ----------------------------------------------------------------------------- unsafe / corrupt input


class Exploit:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
@pytest.mark.parametrize("role", ["sine", "dinov2"])
def test_malicious_pickle_is_refused_and_never_runs(tiny, tmp_path, writer, role):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    payload = {"transformer_decoder.temp": torch.tensor(1.0), "x": Exploit(marker)}
    if writer == "torch":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    if role == "sine":
        args = (evil,)
        kwargs = {}
    else:
        args = (save(official_state(encoder=False)[1], tmp_path / "sine.bin"),)
        kwargs = {"dinov2_file": evil}
    with pytest.raises(W.UnsafeCheckpointError, match="refused.*Nothing from it was executed"):
        W.import_checkpoint(*args, preset=tiny.name, **kwargs)
    assert not marker.exists()
    assert weights_files(tmp_path) == []


def test_from_pretrained_never_unpickles(tiny, tmp_path):
    marker = tmp_path / "pwned"
    evil = save({"x": Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(W.WeightsError, match="only from safetensors.*weights import"):
        W.from_pretrained(evil)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["torch", "torch-legacy", "safetensors"])
def test_truncated_file(tiny, tmp_path, fmt):
    _, state = official_state()
    path = tmp_path / "sine.bin"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "torch")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(W.CorruptCheckpointError, match="truncated or corrupt"):
        W.import_checkpoint(path, preset=tiny.name)
    assert weights_files(tmp_path) == []


def test_not_a_state_dict(tiny, tmp_path):
    with pytest.raises(W.CorruptCheckpointError, match="holds a list"):
        W.import_checkpoint(save([1, 2], tmp_path / "a.bin"), preset=tiny.name)
    with pytest.raises(W.CorruptCheckpointError, match="'epoch'"):
        W.import_checkpoint(save({"w": torch.ones(1), "epoch": 3}, tmp_path / "b.bin"), preset=tiny.name)
    with pytest.raises(W.WeightsNotFoundError, match="no such file"):
        W.import_checkpoint(tmp_path / "missing.bin", preset=tiny.name)


def test_missing_extra_and_misshaped_keys_are_listed(tiny, tmp_path):
    _, state = official_state()
    del state["transformer_decoder.temp"]
    state["transformer_decoder.extra.weight"] = torch.ones(3)
    state["transformer_decoder.query_feat.weight"] = torch.ones(7, 32)
    with pytest.raises(W.KeyMismatchError) as err:
        W.import_checkpoint(save(state, tmp_path / "sine.bin"), preset=tiny.name)
    message = str(err.value)
    assert "missing (1): transformer_decoder.temp" in message
    assert "unexpected (1): transformer_decoder.extra.weight" in message
    assert "transformer_decoder.query_feat.weight: file (7, 32) vs model (10, 32)" in message
    assert err.value.missing == ["transformer_decoder.temp"]
    assert weights_files(tmp_path) == []


def test_non_finite_values_rejected(tiny, tmp_path):
    _, state = official_state()
    state["transformer_decoder.query_embed.weight"][0, 0] = float("nan")
    with pytest.raises(W.CorruptCheckpointError, match="query_embed.weight"):
        W.import_checkpoint(save(state, tmp_path / "sine.bin"), preset=tiny.name)


# ----------------------------------------------------------------------------- prefixes, wrappers, dtypes


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.module.", "model."])
def test_prefixes_stripped_and_criterion_dropped(tiny, tmp_path, prefix):
    model, state = official_state(prefix=prefix)
    installed = W.import_checkpoint(save(state, tmp_path / "sine.bin"), preset=tiny.name)
    assert "dropped criterion.empty_weight (training only)" in installed.record["notes"]
    assert_same_state(model, W.from_pretrained(tiny.name))


def test_wrapped_and_half_precision_checkpoint(tiny, tmp_path):
    model, state = official_state()
    half = {k: v.half() for k, v in state.items()}
    installed = W.import_checkpoint(save({"state_dict": half}, tmp_path / "s.bin"), preset=tiny.name)
    assert any("converted" in note for note in installed.record["notes"])
    loaded = W.from_pretrained(tiny.name)
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, ref[key].half().float())
