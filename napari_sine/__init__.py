"""napari-sine: in-context segmentation (SINE) as a napari plugin.

Give a reference image with labels, get ID, instance and semantic proposals on target images. The
model lives in the napari-free package ``sine_model``; this package holds the napari side (its npe2
manifest is ``napari.yaml`` next to this file).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-sine")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
