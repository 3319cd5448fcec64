"""The entry points a user meets first load no torch: ``import sine_model``, ``import napari_sine``,
``napari-sine --help`` (and every subcommand's ``--help``, ``--version``).

torch (with scipy, scikit-image, …) takes seconds to import; these checks are the load-independent
proxy of the 1.5 s import budget that ``bench/import_time.py`` measures. Each runs in a fresh
interpreter, on this checkout's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Imported only when a model, the engine, a file reader or the widget's model list is first used.
HEAVY = ("torch", "torchvision", "timm", "scipy", "skimage", "pandas", "napari", "qtpy")

REPORT = f"""
import json, sys
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("HEAVY=" + json.dumps(heavy))
"""


def run_fresh(code: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``code`` then report which heavy packages it imported, in a fresh interpreter."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    done = subprocess.run([sys.executable, "-c", code + "\n" + REPORT], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("HEAVY="))
    return done, json.loads(line.removeprefix("HEAVY="))


@pytest.mark.parametrize("statement", ["import sine_model", "import napari_sine",
                                       "import sine_model.cli", "from napari_sine import __version__"])
def test_importing_the_packages_loads_nothing_heavy(statement):
    _, heavy = run_fresh(statement)
    assert heavy == [], f"`{statement}` imported {heavy}"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["propagate", "--help"], ["demo", "--help"],
                                  ["weights", "--help"], ["weights", "import", "--help"],
                                  ["train", "--help"], ["adapt", "--help"], ["rank", "--help"],
                                  ["review", "--help"], ["export", "--help"]],
                         ids=" ".join)
def test_cli_help_loads_no_torch(argv):
    # what the `napari-sine` console script runs: `from sine_model.cli import main; sys.exit(main())`
    done, heavy = run_fresh(f"from sine_model.cli import main\nstatus = main({argv!r})\nassert status == 0")
    assert heavy == [], f"`napari-sine {' '.join(argv)}` imported {heavy}"
    assert "napari-sine" in done.stdout


def test_version_is_the_one_in_sine_model():
    import napari_sine
    import sine_model

    done, _ = run_fresh("from sine_model.cli import main\nmain(['--version'])")
    assert done.stdout.splitlines()[0] == f"napari-sine {sine_model.__version__}"
    assert napari_sine.__version__ == sine_model.__version__
    assert sine_model.__version__ == "0.1.0a1"


def test_weights_import_help_names_the_official_preset():
    from sine_model.hub.presets import OFFICIAL_PRESET

    done, _ = run_fresh("from sine_model.cli import main\nmain(['weights', 'import', '--help'])")
    assert f"official preset, {OFFICIAL_PRESET}" in " ".join(done.stdout.split())
