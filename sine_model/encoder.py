"""Image encoder: a frozen DINOv2 ViT (built on timm) followed by SINE's trainable neck.

The ViT keeps the official DINOv2 parameter names (``cls_token``, ``pos_embed``, ``mask_token``,
``patch_embed.proj``, flat ``blocks.N`` with LayerScale ``ls1``/``ls2``, ``norm``) so the official
checkpoints load strictly. Two official behaviours are reproduced on purpose:

* the feature is the output of the last block *before* the final norm (``x_prenorm``), cls dropped;
* the 37×37 position embedding is resized with bicubic interpolation driven by
  ``scale_factor = (g + 0.1) / 37`` (not ``size=g``), computed in float32. timm's own dynamic resizing
  samples differently, so we do not use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .layers import LayerNorm2d

__all__ = [
    "EncoderConfig", "ENCODER_CONFIGS", "DinoV2Encoder", "ImageEncoder", "build_neck", "encoder_config",
]


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a DINOv2 ViT (patch 14, LayerScale, no registers, unchunked blocks).

    Parameters
    ----------
    name : str
        Short name used by :func:`sine_model.build_sine`.
    embed_dim, depth, num_heads : int
        ViT width, number of blocks and heads.
    mlp_ratio : float
        FFN width as a multiple of ``embed_dim``.
    patch_size : int
        Patch side in pixels.
    pretrain_size : int
        Image side the position embedding was trained for (518 → a 37×37 grid).
    timm_name : str or None
        timm model name whose pretrained DINOv2 weights match this shape (used by the weights module).
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    patch_size: int = 14
    pretrain_size: int = 518
    timm_name: str | None = None


ENCODER_CONFIGS: dict[str, EncoderConfig] = {
    "vits": EncoderConfig("vits", 384, 12, 6, timm_name="vit_small_patch14_dinov2.lvd142m"),
    "vitb": EncoderConfig("vitb", 768, 12, 12, timm_name="vit_base_patch14_dinov2.lvd142m"),
    "vitl": EncoderConfig("vitl", 1024, 24, 16, timm_name="vit_large_patch14_dinov2.lvd142m"),
}


def encoder_config(encoder: str | EncoderConfig) -> EncoderConfig:
    """Resolve an encoder name (``"vits"``, ``"vitb"``, ``"vitl"``) or pass a config through."""
    if isinstance(encoder, EncoderConfig):
        return encoder
    try:
        return ENCODER_CONFIGS[encoder]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown encoder {encoder!r}: choose one of {sorted(ENCODER_CONFIGS)} "
            "or pass an EncoderConfig"
        ) from None


class DinoV2Encoder(VisionTransformer):
    """DINOv2 ViT on timm's implementation, with DINOv2's names, feature and position interpolation.

    Parameters
    ----------
    config : EncoderConfig
        Shape of the ViT.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(
            img_size=config.pretrain_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=True,
            init_values=1e-5,  # LayerScale exists in DINOv2 (ls1.gamma / ls2.gamma)
            num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.config = config
        # Present in the official checkpoint (masked-image pretraining); unused at inference.
        self.mask_token = nn.Parameter(torch.zeros(1, config.embed_dim))

    @property
    def pretrain_grid(self) -> int:
        return self.config.pretrain_size // self.config.patch_size

    def interpolated_pos_embed(self, grid_h: int, grid_w: int) -> Tensor:
        """Patch position embedding resized to a ``grid_h`` × ``grid_w`` grid, cls row first.

        Reproduces DINOv2's ``interpolate_pos_encoding``: bicubic, ``align_corners=False``, no antialias,
        ``scale_factor=(g + 0.1) / 37``, float32; the embedding is returned untouched on the 37×37 grid.
        """
        base = self.pretrain_grid
        if grid_h == base and grid_w == base:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = pos.shape[-1]
        side = int(math.sqrt(patch_pos.shape[1]))
        patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos,
            scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side),
            mode="bicubic",
            align_corners=False,
        )
        if patch_pos.shape[-2:] != (grid_h, grid_w):  # the +0.1 offset guards against this
            raise RuntimeError(f"position embedding resized to {tuple(patch_pos.shape[-2:])}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Encode normalised images (B, 3, H, W) into pre-norm patch features (B, D, H/14, W/14)."""
        batch, _, height, width = x.shape
        patch = self.config.patch_size
        grid_h, grid_w = height // patch, width // patch
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.interpolated_pos_embed(grid_h, grid_w).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        # x_prenorm: the final `norm` is loaded but deliberately not applied.
        return tokens[:, 1:].transpose(1, 2).reshape(batch, -1, grid_h, grid_w)


def build_neck(in_dim: int, out_dim: int = 256) -> nn.Sequential:
    """SINE's SAM-style neck: 1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d (official keys ``neck.0..3``)."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )


class ImageEncoder(nn.Module):
    """DINOv2 encoder + SAM-style neck (1×1 conv, LN2d, 3×3 conv, LN2d), stride 14.

    Parameters
    ----------
    config : EncoderConfig
        Shape of the ViT.
    out_dim : int
        Width of the neck output.
    freeze_encoder : bool
        Freeze the ViT (official: always frozen, features computed without gradient).
    """

    def __init__(self, config: EncoderConfig, out_dim: int = 256, freeze_encoder: bool = True) -> None:
        super().__init__()
        self.encoder = DinoV2Encoder(config)
        self.neck = build_neck(config.embed_dim, out_dim)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    @property
    def patch_size(self) -> int:
        return self.encoder.config.patch_size

    def forward(self, images: Tensor) -> Tensor:
        """Normalised padded images (B, 3, P, P) → neck features (B, out_dim, P/14, P/14)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            features = self.encoder(images)
        return self.neck(features)
