"""One description of a SINE model (:class:`ModelConfig`) and one way to build it (:func:`build_model`).

Presets (:mod:`sine_model.hub.presets`), training recipes (``[model]`` of a training config), training
exports and the raw contract (:func:`build_sine`) all describe a model with a :class:`ModelConfig` and
build it here, with random weights and no file or network access. The built :class:`SINE` carries
``preset = None``; :func:`sine_model.hub.pretrained.from_pretrained` sets it to the preset whose weights
it loaded, and the engine reads its input conventions from there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from sine_model.modeling.embedded import EMBEDDED_KINDS, EmbeddedImageEncoder, FilterBankEncoder, SmallCNN
from sine_model.modeling.encoder import ENCODER_CONFIGS, EncoderConfig, ImageEncoder, encoder_config
from sine_model.modeling.mformer import MFormer
from sine_model.modeling.sine import SINE

__all__ = ["MODEL_KINDS", "ModelConfig", "build_model", "build_model_skeleton", "build_sine"]

#: Encoders: the small ones trained from scratch (``cnn``, ``filterbank``) and the DINOv2 ViTs.
MODEL_KINDS: tuple[str, ...] = (*EMBEDDED_KINDS, *ENCODER_CONFIGS)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a SINE model; the defaults are the official model's.

    Parameters
    ----------
    kind : {"cnn", "filterbank", "vits", "vitb", "vitl"} or EncoderConfig
        The encoder: a small encoder trained from scratch, or a DINOv2 ViT-S/B/L/14 (official ``"vitl"``);
        an :class:`~sine_model.modeling.encoder.EncoderConfig` gives a DINOv2 ViT of another shape.
    dim, num_heads, ffn_dim : int
        Decoder width, heads and FFN width (official 256, 8, 2048).
    num_fusion_layers, num_decoder_layers : int
        In-context fusion layers and M-Former blocks (official 1, 6).
    num_queries : int
        Instance queries (official 200).
    gaussian_sigma : float
        σ of the ID-position Gaussian in grid cells (official 10).
    encoder_dim : int
        Width of a small encoder's grid features (the neck input); ViTs use their own width.
    channels : tuple of 3 int, optional
        Small encoder widths at strides 2, 4, 8 (default (32, 64, 128) for the CNN, (64, 96, 128) for the
        filter bank).
    sigmas : tuple of float
        Filter-bank scales in input pixels (``"filterbank"`` only).
    freeze_encoder : bool, optional
        Freeze the encoder; default: frozen for DINOv2 (official), trainable for the small encoders.
    """

    kind: str | EncoderConfig = "vitl"
    dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    num_fusion_layers: int = 1
    num_decoder_layers: int = 6
    num_queries: int = 200
    gaussian_sigma: float = 10.0
    encoder_dim: int = 256
    channels: tuple[int, ...] | None = None
    sigmas: tuple[float, ...] = (0.7, 1.6, 3.5, 5.0, 8.0)
    freeze_encoder: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EncoderConfig) and self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)} (or an EncoderConfig), "
                             f"got {self.kind!r}")
        for name in ("dim", "num_heads", "ffn_dim", "num_decoder_layers", "num_queries", "encoder_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_fusion_layers < 0:
            raise ValueError(f"num_fusion_layers must be >= 0, got {self.num_fusion_layers}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.channels is not None and len(self.channels) != 3:
            raise ValueError(f"channels must be three widths (strides 2, 4, 8), got {self.channels}")

    @property
    def embedded(self) -> bool:
        """Whether the encoder is one of the small ones trained from scratch."""
        return isinstance(self.kind, str) and self.kind in EMBEDDED_KINDS

    @property
    def encoder_config(self) -> EncoderConfig | None:
        """The DINOv2 shape of the encoder, or ``None`` for a small encoder."""
        return None if self.embedded else encoder_config(self.kind)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (a named ``kind`` only: an EncoderConfig is not serialisable)."""
        if isinstance(self.kind, EncoderConfig):
            raise ValueError("a ModelConfig with a custom EncoderConfig cannot be recorded; use a named kind")
        fields = asdict(self)
        fields["channels"] = list(self.channels) if self.channels is not None else None
        fields["sigmas"] = list(self.sigmas)
        return fields


def build_model(config: ModelConfig) -> SINE:
    """Build the model of ``config`` with random weights (no file or network access).

    Returns
    -------
    SINE
        With the official state-dict names (``image_encoder.encoder.*``, ``image_encoder.neck.*``,
        ``transformer_decoder.*``) and ``preset = None``.
    """
    if config.embedded:
        freeze = bool(config.freeze_encoder)
        if config.kind == "cnn":
            encoder: nn.Module = SmallCNN(config.channels or (32, 64, 128), out_dim=config.encoder_dim)
        else:
            encoder = FilterBankEncoder(config.channels or (64, 96, 128), out_dim=config.encoder_dim,
                                        sigmas=config.sigmas)
        image_encoder: nn.Module = EmbeddedImageEncoder(encoder, out_dim=config.dim, freeze_encoder=freeze)
    else:
        freeze = config.freeze_encoder is not False
        image_encoder = ImageEncoder(encoder_config(config.kind), out_dim=config.dim, freeze_encoder=freeze)
    return SINE(
        image_encoder,
        MFormer(
            dim=config.dim,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            num_fusion_layers=config.num_fusion_layers,
            num_decoder_layers=config.num_decoder_layers,
            num_queries=config.num_queries,
            mask_dim=config.dim,
            gaussian_sigma=config.gaussian_sigma,
        ),
    )


#: The initialisers our modules (and torch's, through ``reset_parameters``) call while being built.
_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
                 "xavier_normal_", "kaiming_uniform_", "kaiming_normal_")
_SKELETON_LOCK = threading.Lock()


@contextmanager
def _initialisers_skipped() -> Iterator[None]:
    """Make ``torch.nn.init``'s initialisers no-ops while a skeleton is built (one build at a time)."""
    with _SKELETON_LOCK:
        saved = {name: getattr(nn.init, name) for name in _INITIALISERS}
        try:
            for name in _INITIALISERS:
                setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
            yield
        finally:
            for name, function in saved.items():
                setattr(nn.init, name, function)


def build_model_skeleton(config: ModelConfig) -> SINE:
    """The model of ``config`` on the meta device, uninitialised: shapes for checks, or weights to assign.

    Random initialisation on the meta device is not free: torch's meta kernels for ``normal_`` (and
    ``arange``) import ``torch._dynamo`` and with it triton, which crashes a process that has Mesa's
    OpenGL loaded (napari; docs/architecture.md, "Imports at run time") and costs about a second. The
    weights are about to be loaded anyway, so the initialisers are skipped; constant buffers (the filter
    bank's kernels) are made on the CPU.
    """
    with _initialisers_skipped(), torch.device("meta"):
        return build_model(config)


def build_sine(encoder: str | EncoderConfig = "vitl", **architecture: Any) -> SINE:
    """Shorthand for ``build_model(ModelConfig(kind=encoder, **architecture))``: the raw-contract model.

    Parameters
    ----------
    encoder : {"vits", "vitb", "vitl", "cnn", "filterbank"} or EncoderConfig
        The encoder (official ``"vitl"``).
    **architecture
        Any other :class:`ModelConfig` field (``dim``, ``num_queries``, ``freeze_encoder`` …).
    """
    for name in ("channels", "sigmas"):
        if isinstance(architecture.get(name), Sequence):
            architecture[name] = tuple(architecture[name])
    return build_model(ModelConfig(kind=encoder, **architecture))
