"""sine_model — a napari-free PyTorch implementation of SINE in-context segmentation.

Build the model with :func:`build_sine`; prepare inputs with :mod:`sine_model.transforms` and turn raw
outputs into masks with :mod:`sine_model.postprocess`.
"""

from .context import ReferenceTokens
from .encoder import ENCODER_CONFIGS, EncoderConfig
from .model import SINE, build_sine

__all__ = ["SINE", "build_sine", "EncoderConfig", "ENCODER_CONFIGS", "ReferenceTokens"]
