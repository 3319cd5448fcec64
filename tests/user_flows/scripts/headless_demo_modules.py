"""User flow without napari: the ``napari-sine`` command's ``demo``, run in this process, then sys.modules.

The command is reached through its console-script entry point (what ``napari-sine`` runs), so no module
path inside sine_model is named here. Usage: ``headless_demo_modules.py OUT_DIR``. Prints
``USER_FLOW_RESULT {json}`` with the exit status and which of the heavy optional modules got imported.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points

WATCHED = ("timm", "torchvision", "torch._dynamo", "triton", "napari", "qtpy")


def main(out_dir: str) -> dict:
    """Run ``napari-sine demo --out OUT_DIR --device cpu --no-calibrate --no-refine`` (inference only: the
    recipe's refiner trains with a torch optimizer, whose first step imports torch._dynamo) in-process;
    report the status and modules."""
    scripts = list(entry_points(group="console_scripts", name="napari-sine"))
    if not scripts:
        raise SystemExit("the napari-sine console script is not installed (pip install -e .)")
    command = scripts[0].load()
    status = command(["demo", "--out", out_dir, "--device", "cpu", "--no-calibrate", "--no-refine"])
    return {"status": status, "loaded": [name for name in WATCHED if name in sys.modules]}


if __name__ == "__main__":
    print("USER_FLOW_RESULT " + json.dumps(main(sys.argv[1])), flush=True)
