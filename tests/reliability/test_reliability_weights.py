"""Reliability, surface "weights": damaged, foreign and malicious weights files, and a damaged cache.

Through ``napari-sine weights import`` / ``verify`` and ``from_pretrained`` with a tiny preset in a
temporary cache (no network). A bad file must be refused with a message that says what it really is
(random bytes are not "pickled objects which could run code"), leave the cache as it was, and never run
pickled code.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from reliability_helpers import assert_message, note, run_cli
from weights_helpers import ENC, official_state, save, weights_files
from weights_helpers import isolated_fixture as isolated_fixture  # fixture `isolated`, autouse
from weights_helpers import tiny_fixture as tiny_fixture  # fixture `tiny`

from sine_model.hub import pretrained as W


def import_cli(capsys, path, preset) -> tuple[int, str, str]:
    return run_cli(capsys, "weights", "import", path, "--preset", preset.name, "--offline")


def test_truncated_weights_file(capsys, tiny, tmp_path, record_property):
    """Did: weights import of a torch checkpoint cut to half. Must: exit 1, 'truncated or corrupt',
    nothing installed."""
    path = save(official_state()[1], tmp_path / "sine.bin")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, _, err = import_cli(capsys, path, tiny)
    note(record_property, err)
    assert code == 1 and "truncated or corrupt" in err and "Traceback" not in err, err
    assert weights_files(tmp_path) == []


def test_random_bytes_as_weights(capsys, tiny, tmp_path, record_property):
    """Did: weights import of 4 kB of random bytes named sine.bin. Must: exit 1, says it is not a weights
    file; must NOT claim 'pickled objects' (it holds none); nothing installed."""
    path = tmp_path / "sine.bin"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                         dtype=torch.uint8).tolist()))
    code, _, err = import_cli(capsys, path, tiny)
    note(record_property, err)
    assert code == 1 and "not a weights file" in err, err
    assert "pickled" not in err
    assert weights_files(tmp_path) == []


def test_foreign_keys(capsys, tiny, tmp_path, record_property):
    """Did: weights import of a state dict of another model (a torchvision-like ResNet's names). Must:
    exit 1 and say 'these keys are not SINE's' first (was 9 lines about a missing DINOv2 encoder)."""
    foreign = {f"layer{i}.{j}.conv1.weight": torch.zeros(4, 4, 3, 3) for i in range(1, 5) for j in range(3)}
    foreign["fc.weight"] = torch.zeros(10, 4)
    code, _, err = import_cli(capsys, save(foreign, tmp_path / "resnet.pth"), tiny)
    note(record_property, err)
    assert code == 1 and "these keys are not SINE's" in err, err
    assert "DINOv2" not in err
    assert weights_files(tmp_path) == []


def test_foreign_keys_in_python(tiny, tmp_path, record_property):
    """Did: import_checkpoint of a file holding SINE's encoder names but another decoder's. Must:
    KeyMismatchError 'these keys are not SINE's' listing the foreign names."""
    _, state = official_state()
    foreign = {k: v for k, v in state.items() if k.startswith(ENC)}
    foreign.update({f"head.block{i}.weight": torch.zeros(3) for i in range(40)})
    with pytest.raises(W.KeyMismatchError) as err:
        W.import_checkpoint(save(foreign, tmp_path / "other.pth"), preset=tiny.name, allow_download=False)
    assert_message(record_property, err.value, "these keys are not SINE's", "head.block")


class Exploit:
    """Unpickling this would create the marker file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_never_runs(capsys, tiny, tmp_path, record_property, writer):
    """Did: weights import of a file whose pickle would create a file when loaded (torch.save and plain
    pickle). Must: exit 1, refused as pickled objects, 'Nothing from it was executed'; the marker file
    does not exist; nothing installed. Also through --model on propagate's loader."""
    marker = tmp_path / "pwned"
    payload = {"transformer_decoder.temp": torch.tensor(1.0), "x": Exploit(marker)}
    evil = tmp_path / "evil.bin"
    if writer == "torch":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    code, _, err = import_cli(capsys, evil, tiny)
    note(record_property, err)
    assert code == 1 and "Nothing from it was executed" in err, err
    with pytest.raises(W.WeightsError):
        W.from_pretrained(evil)
    assert not marker.exists()
    assert weights_files(tmp_path) == []


def test_corrupted_cache_file(capsys, tiny, tmp_path, record_property):
    """Did: imported weights, then flipped one byte of the cached safetensors file. Must: `weights
    verify` exits 1 with MISMATCH and 'import it again'; loading the preset raises HashMismatchError
    instead of running with damaged weights."""
    installed = W.import_checkpoint(save(official_state()[1], tmp_path / "s.bin"), preset=tiny.name)
    data = bytearray(installed.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    installed.path.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "weights", "verify", tiny.name)
    note(record_property, err)
    assert code == 1 and "MISMATCH" in err and "import it again" in err, err
    with pytest.raises(W.HashMismatchError, match="(?i)import it again"):
        W.from_pretrained(tiny.name)
