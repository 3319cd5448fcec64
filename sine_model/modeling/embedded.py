"""The embedded SINE: the official architecture with a small encoder that trains from scratch on a CPU.

Pretrained DINOv2 weights cannot be downloaded everywhere, so napari-sine ships a compact model: the
neck, in-context fusion, M-Former and heads are SINE's own modules (official parameter names under
``image_encoder.neck.*`` and ``transformer_decoder.*``), at a reduced width; only the ViT is replaced
by one of two small encoders with the ViT's contract — normalised images (B, 3, P, P), P a multiple
of 14, in; features (B, C, P/14, P/14) out — so every downstream shape is unchanged:

``"cnn"`` (:class:`SmallCNN`)
    Conv–GroupNorm–ReLU stages at strides 2, 4 and 8, area-pooled to the stride-14 grid, then two
    3×3 convolutions on the grid.
``"filterbank"`` (:class:`FilterBankEncoder`)
    A fixed multiscale filter bank (:class:`~sine_model.modeling.filter_bank.FilterBank`: Gaussian, gradient
    magnitude, LoG, Hessian and structure-tensor eigenvalues, colour, at 5 scales; no parameters),
    computed at stride 2, a learned 1×1 projection, two strided 3×3 convolutions, then the same grid
    stage as the CNN.

GroupNorm (not BatchNorm) keeps training with two-image episodes and inference identical.

Parameter counts of :func:`~sine_model.modeling.config.build_model` for the embedded preset (dim 128, 4
heads, FFN 512, 1 fusion +
3 decoder layers, 50 queries, encoder width 256), all trainable, float32:

============  ==========  =======  ============  ==========  ==============
kind          encoder     neck     M-Former      total       safetensors
============  ==========  =======  ============  ==========  ==============
cnn           1,163,680   180,736  1,583,428     2,927,844   about 11.7 MB
filterbank    1,055,360   180,736  1,583,428     2,819,524   about 11.3 MB
============  ==========  =======  ============  ==========  ==============
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sine_model.modeling.encoder import build_neck
from sine_model.modeling.filter_bank import FilterBank

__all__ = [
    "EMBEDDED_KINDS",
    "SmallCNN",
    "FilterBankEncoder",
    "EmbeddedImageEncoder",
    "count_parameters",
]

EMBEDDED_KINDS = ("cnn", "filterbank")
PATCH_SIZE = 14  # the grid stride of the official model; all downstream shapes depend on it


def conv_norm_act(in_channels: int, out_channels: int, stride: int = 1, groups: int = 8) -> nn.Sequential:
    """3×3 convolution (no bias) → GroupNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(groups, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


def _check_input(images: Tensor, patch: int) -> None:
    if images.ndim != 4 or images.shape[-1] % patch or images.shape[-2] % patch:
        raise ValueError(
            f"expected (B, C, H, W) with H and W multiples of {patch}, got {tuple(images.shape)}"
        )


class GridStage(nn.Module):
    """Area-pool a feature map to the stride-14 grid, then two 3×3 convolutions (the last one linear).

    Parameters
    ----------
    in_channels, out_channels : int
        Widths before and after.
    groups : int
        GroupNorm groups.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 8) -> None:
        super().__init__()
        self.block = conv_norm_act(in_channels, out_channels, groups=groups)
        self.proj = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        return self.proj(self.block(F.adaptive_avg_pool2d(x, grid)))


class SmallCNN(nn.Module):
    """A small CNN encoder: stride-2 stem, two stride-2 stages of two convolutions, grid stage.

    Parameters
    ----------
    channels : sequence of 3 int
        Widths at strides 2, 4 and 8.
    out_dim : int
        Width of the grid features (the neck's input).
    groups : int
        GroupNorm groups.
    """

    patch_size = PATCH_SIZE

    def __init__(self, channels: Sequence[int] = (32, 64, 128), out_dim: int = 256, groups: int = 8) -> None:
        super().__init__()
        c1, c2, c3 = _three(channels)
        self.out_dim = out_dim
        self.stem = conv_norm_act(3, c1, stride=2, groups=groups)
        self.stage2 = nn.Sequential(conv_norm_act(c1, c2, 2, groups), conv_norm_act(c2, c2, 1, groups))
        self.stage3 = nn.Sequential(conv_norm_act(c2, c3, 2, groups), conv_norm_act(c3, c3, 1, groups))
        self.grid = GridStage(c3, out_dim, groups)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images (B, 3, P, P) → features (B, out_dim, P/14, P/14)."""
        _check_input(images, self.patch_size)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        return self.grid(self.stage3(self.stage2(self.stem(images))), grid)


class FilterBankEncoder(nn.Module):
    """Fixed filter bank at stride 2 → learned 1×1 projection → two stride-2 convolutions → grid stage.

    Parameters
    ----------
    channels : sequence of 3 int
        Widths of the projection (stride 2) and of the convolutions at strides 4 and 8.
    out_dim : int
        Width of the grid features.
    sigmas : sequence of float
        Scales of the filter bank in input pixels.
    colour : bool
        Colour features in the bank.
    groups : int
        GroupNorm groups.
    """

    patch_size = PATCH_SIZE

    def __init__(
        self,
        channels: Sequence[int] = (64, 96, 128),
        out_dim: int = 256,
        sigmas: Sequence[float] = (0.7, 1.6, 3.5, 5.0, 8.0),
        colour: bool = True,
        groups: int = 8,
    ) -> None:
        super().__init__()
        c1, c2, c3 = _three(channels)
        self.out_dim = out_dim
        self.bank = FilterBank(sigmas, colour=colour, include_raw=True, stride=2)
        self.project = nn.Sequential(
            nn.Conv2d(self.bank.num_features, c1, kernel_size=1, bias=False),
            nn.GroupNorm(min(groups, c1), c1),
            nn.ReLU(inplace=True),
        )
        self.down = nn.Sequential(conv_norm_act(c1, c2, 2, groups), conv_norm_act(c2, c3, 2, groups))
        self.grid = GridStage(c3, out_dim, groups)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images (B, 3, P, P) → features (B, out_dim, P/14, P/14)."""
        _check_input(images, self.patch_size)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        return self.grid(self.down(self.project(self.bank(images))), grid)


def _three(channels: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(c) for c in channels)
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"channels must be three positive widths, got {tuple(channels)}")
    return values  # type: ignore[return-value]


class EmbeddedImageEncoder(nn.Module):
    """A small encoder followed by SINE's neck, with the interface of
    :class:`~sine_model.modeling.encoder.ImageEncoder`.

    Parameters
    ----------
    encoder : SmallCNN or FilterBankEncoder
        Any module mapping (B, 3, P, P) to (B, ``encoder.out_dim``, P/14, P/14).
    out_dim : int
        Width of the neck output (the decoder width).
    freeze_encoder : bool
        Freeze the encoder (features computed without gradient), as for the official ViT.
    """

    def __init__(self, encoder: nn.Module, out_dim: int = 128, freeze_encoder: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.neck = build_neck(int(encoder.out_dim), out_dim)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    @property
    def patch_size(self) -> int:
        return int(self.encoder.patch_size)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised padded images (B, 3, P, P) → neck features (B, out_dim, P/14, P/14)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            features = self.encoder(images)
        return self.neck(features)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> dict[str, int]:
    """Parameter counts of a SINE model: ``encoder``, ``neck``, ``decoder`` and ``total``.

    Parameters
    ----------
    model : nn.Module
        A :class:`~sine_model.modeling.sine.SINE`.
    trainable_only : bool
        Count only parameters with ``requires_grad``.
    """
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    parts = {
        "encoder": count(model.image_encoder.encoder),
        "neck": count(model.image_encoder.neck),
        "decoder": count(model.transformer_decoder),
    }
    parts["total"] = sum(parts.values())
    return parts
