"""Write the engine's proposals on the bundled sample as the parity fixture of issue 22 (run by hand).

The fixture (``tests/data/embedded_parity.npz``, compressed) holds, for the three sample targets (full
520×696 images, the sample reference as the only reference), the label maps of the embedded model
(``sine-embedded``, default options) in every mode, and the instance map made from its instance queries
(``instance_source="queries"``, the official model's path). ``tests/engine/test_embedded_parity.py``
compares the engine's current proposals with it, so speed work that changes outputs is caught.

``--recipe`` writes the proposals of what users run instead (``tests/data/recipe_parity.npz``): the
preset's fitting recipe (:class:`~sine_model.fitting.preparation.ReferencePreparation`: calibration, the
refiner's MLP and forest) on the sample reference, then the three targets in every mode, all on one
thread (the refiner's features differ in their last float bits with the thread count), compared by
``tests/engine/test_recipe_parity.py``.

Write them only from code whose outputs are the reference (the model's before the issue-22 changes, the
recipe's before its second stop, commit recorded in the file)::

    python bench/parity_fixture.py --out tests/data/embedded_parity.npz
    python bench/parity_fixture.py --recipe --out tests/data/recipe_parity.npz
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


def recipe_proposals() -> dict[str, np.ndarray]:
    """Label maps ``(3, H, W)`` per mode of the preset's recipe, fitted and run on one thread."""
    import torch

    from sine_model import from_pretrained
    from sine_model.engine.propagator import Propagator
    from sine_model.fitting.preparation import ReferencePreparation
    from sine_model.sample_data import load_sample

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sample = load_sample()
        prop = Propagator(from_pretrained("sine-embedded"), device="cpu", num_threads=1)
        ReferencePreparation(prop, [(sample.reference, sample.reference_labels)]).run()
        results = list(prop.propagate(sample.targets, modes=MODES, stack_axis=0))
    finally:
        torch.set_num_threads(threads)
    return {mode: np.stack([r.labels[mode].astype(np.uint16) for r in results]) for mode in MODES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="default: tests/data/embedded_parity.npz, "
                        "with --recipe tests/data/recipe_parity.npz")
    parser.add_argument("--recipe", action="store_true", help="what users run: the preset's recipe")
    args = parser.parse_args()
    args.out = args.out or f"tests/data/{'recipe' if args.recipe else 'embedded'}_parity.npz"
    proposals = recipe_proposals() if args.recipe else sample_proposals()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    np.savez_compressed(Path(args.out), commit=np.array(commit), **proposals)
    for key, value in proposals.items():
        print(key, value.shape, "objects per target:", [len(np.unique(v)) - 1 for v in value])
    print("wrote", args.out, "from commit", commit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
