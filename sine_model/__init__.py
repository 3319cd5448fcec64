"""sine_model — a napari-free PyTorch implementation of SINE in-context segmentation.

Build the model with :func:`build_sine`; prepare inputs with :mod:`sine_model.transforms` and turn raw
outputs into masks with :mod:`sine_model.postprocess`.
"""

from . import triton_guard

triton_guard.install()  # before anything can import torch._dynamo: see sine_model/triton_guard.py

from .context import ReferenceTokens  # noqa: E402
from .encoder import ENCODER_CONFIGS, EncoderConfig  # noqa: E402
from .model import SINE, build_sine  # noqa: E402

__all__ = ["SINE", "build_sine", "EncoderConfig", "ENCODER_CONFIGS", "ReferenceTokens"]
