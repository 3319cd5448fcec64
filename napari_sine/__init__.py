"""napari-sine: in-context segmentation (SINE) as a napari plugin.

Give a reference image with labels, get ID, instance and semantic proposals on target images. The
model lives in the napari-free package ``sine_model``; this package holds the napari side (its npe2
manifest is ``napari.yaml`` next to this file). Importing it loads neither napari nor torch: napari
imports the widget module when the user opens the widget, and the model loads in the run's worker.
"""

from sine_model import __version__

__all__ = ["__version__"]
