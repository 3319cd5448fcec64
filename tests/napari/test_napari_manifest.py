"""The npe2 manifest: valid on the installed plugin, discovered by napari, contributions work."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import npe2
import pytest
from sine_plugin_helpers import WARNINGS_AS_ERRORS
from sine_plugin_helpers import plugin_env_fixture as plugin_env_fixture  # fixture `plugin_env`
from sine_plugin_helpers import sample_viewer_fixture as sample_viewer_fixture  # fixture `sample_viewer`
from sine_plugin_helpers import tiny_preset_fixture as tiny_preset_fixture  # fixture `tiny_preset`

from napari_sine._qt.widget import SineWidget

ROOT = Path(__file__).resolve().parents[2]

pytestmark = WARNINGS_AS_ERRORS


@pytest.fixture
def installed():
    try:
        return distribution("napari-sine")
    except PackageNotFoundError:
        pytest.skip("napari-sine is not installed (pip install -e .)")


def test_one_manifest_inside_the_package_and_the_root_links_to_it():
    root, packaged = ROOT / "napari.yaml", ROOT / "napari_sine" / "napari.yaml"
    assert packaged.is_file() and not packaged.is_symlink()
    if not root.exists() and not (ROOT / ".git").exists():
        pytest.skip("an unpacked sdist: the root link is a convenience of the repository, not shipped")
    assert root.is_symlink() and root.resolve() == packaged.resolve()


def test_npe2_validate_installed_plugin(installed, tmp_path):
    # `python -m` puts the working directory first on sys.path: from the repository root the checkout's
    # package was validated, from anywhere else whatever the install points at. This checkout, always:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-sine"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
                            timeout=300)  # a ceiling for a hung process, not a speed check
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
    manifest = npe2.PluginManifest.from_distribution("napari-sine")
    manifest.validate_imports()  # every python_name imports
    assert {w.display_name for w in manifest.contributions.widgets} == {"SINE"}
    assert [s.key for s in manifest.contributions.sample_data] == ["nuclei"]


def test_napari_discovers_plugin(installed, make_napari_viewer, plugin_env):
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    manager = npe2.PluginManager.instance()
    assert manager.get_manifest("napari-sine").name == "napari-sine"
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sine", "SINE")
    assert isinstance(widget, SineWidget)
    viewer.open_sample("napari-sine", "nuclei")
    names = [layer.name for layer in viewer.layers]
    assert names == ["reference", "reference labels", "targets", "targets ground truth"]
    assert viewer.layers["targets"].data.shape == (3, 520, 696)
    assert widget.references.rows[0].labels.layer() is viewer.layers["reference labels"]
    assert widget.targets.checked_layers() == [viewer.layers["targets"]]
