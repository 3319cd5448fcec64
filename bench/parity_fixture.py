"""Write the engine's proposals on the bundled sample as the parity fixture of issue 22 (run by hand).

The fixture (``tests/data/embedded_parity.npz``, compressed) holds, for the three sample targets (full
520×696 images, the sample reference as the only reference), the label maps of the embedded model
(``sine-embedded``, default options) in every mode, and the instance map made from its instance queries
(``instance_source="queries"``, the official model's path). ``tests/engine/test_embedded_parity.py``
compares the engine's current proposals with it, so speed work that changes outputs is caught.

Write it only from code whose outputs are the reference (it was written before the issue-22 changes)::

    python bench/parity_fixture.py --out tests/data/embedded_parity.npz
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np

MODES = ("id", "instance", "semantic")


def sample_proposals() -> dict[str, np.ndarray]:
    """Label maps ``(3, H, W)`` per key: ``id``, ``instance``, ``semantic`` and ``instance_queries``."""
    from sine_model import from_pretrained
    from sine_model.engine.propagator import Propagator
    from sine_model.sample_data import load_sample

    sample = load_sample()
    model = from_pretrained("sine-embedded")
    out: dict[str, np.ndarray] = {}
    for source, modes, prefix in ((None, MODES, ""), ("queries", ("instance",), "_queries")):
        # the saved ID maps are the model's ID queries' answer (the preset answers ID by matching)
        prop = Propagator(model, device="cpu", instance_source=source, id_source="queries")
        prop.set_references([(sample.reference, sample.reference_labels)])
        results = list(prop.propagate(sample.targets, modes=modes, stack_axis=0))
        for mode in modes:
            out[mode + prefix] = np.stack([r.labels[mode].astype(np.uint16) for r in results])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/data/embedded_parity.npz")
    args = parser.parse_args()
    proposals = sample_proposals()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    np.savez_compressed(Path(args.out), commit=np.array(commit), **proposals)
    for key, value in proposals.items():
        print(key, value.shape, "objects per target:", [len(np.unique(v)) - 1 for v in value])
    print("wrote", args.out, "from commit", commit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
