"""The screenshot script keeps working (it writes to a temporary file here, not to docs/images)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
from make_screenshot import take_screenshot
from sine_plugin_helpers import TINY_PRESET, TINY_SCALE, WARNINGS_AS_ERRORS
from sine_plugin_helpers import plugin_env_fixture as plugin_env_fixture  # fixture `plugin_env`
from sine_plugin_helpers import sample_viewer_fixture as sample_viewer_fixture  # fixture `sample_viewer`
from sine_plugin_helpers import tiny_preset_fixture as tiny_preset_fixture  # fixture `tiny_preset`

pytestmark = WARNINGS_AS_ERRORS


def test_screenshot_shows_widget_and_layers(make_napari_viewer, tiny_preset, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1200, 800)
    path = take_screenshot(viewer, tmp_path / "shot.png", model=TINY_PRESET, scale=TINY_SCALE, timeout_s=300)
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 600 and image.shape[1] >= 900
    assert np.std(image[..., :3]) > 10  # not a blank window
    assert "targets [SINE instance]" in viewer.layers
