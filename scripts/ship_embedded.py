"""Turn a ``napari-sine train`` export into the bundled weights of the ``sine-embedded`` preset.

Usage (after ``napari-sine train configs/embedded.toml``)::

    python scripts/ship_embedded.py outputs/embedded/model.safetensors

It checks that the export's recorded architecture is the preset's, writes
``sine_model/data/sine-embedded.safetensors`` (safetensors with the preset name in its metadata) and
prints the sha256 and size to put into the preset's ``WeightSource`` in ``sine_model/hub/presets.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from safetensors import safe_open

from sine_model.hub.presets import EMBEDDED_PRESET, get_preset, register_preset
from sine_model.hub.pretrained import META_TRAINED_MODEL, from_pretrained, save_preset_weights

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="model.safetensors written by napari-sine train")
    args = parser.parse_args()
    with safe_open(str(args.export), framework="pt") as handle:
        record = json.loads((handle.metadata() or {})[META_TRAINED_MODEL])
    preset = get_preset(EMBEDDED_PRESET)
    architecture = {"kind": record["kind"], **{k: v for k, v in record.items()
                                               if k in preset.architecture and k != "kind"}}
    wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in preset.architecture.items()}
    if architecture != wanted:
        raise SystemExit(f"the export's architecture {architecture} differs from the preset's {wanted}")
    model = from_pretrained(str(args.export))
    # the preset's recorded hash is the old file's: write under a stand-in entry, then report the new one
    stand_in = dataclasses.replace(preset, weights=dataclasses.replace(preset.weights, sha256="0" * 64))
    register_preset(stand_in, replace=True)
    try:
        target = ROOT / "sine_model" / preset.weights.location
        digest = save_preset_weights(model, stand_in, target)
    finally:
        register_preset(preset, replace=True)
    print(f"wrote {target} ({target.stat().st_size:,} bytes)\nsha256={digest!r}, "
          f"size_bytes={target.stat().st_size}")


if __name__ == "__main__":
    main()
