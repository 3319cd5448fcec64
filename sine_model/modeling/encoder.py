"""Image encoder: a frozen DINOv2 ViT followed by SINE's trainable neck.

The ViT is written here rather than taken from timm: importing timm imports torchvision, which imports
``torch._dynamo`` and triton, and triton's own LLVM crashes a process where Mesa's OpenGL (llvmpipe)
is already loaded, i.e. napari on most Linux desktops (see docs/architecture.md, "Imports at run time").
The blocks are the plain pre-norm ViT blocks of DINOv2 and timm (same operations in the same order; a
test compares them with timm's ``VisionTransformer`` when timm is installed).

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sine_model.modeling.layers import LayerNorm2d

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


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens (official key ``patch_embed.proj``)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)


class LayerScale(nn.Module):
    """Per-channel residual scale (official key ``gamma``)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ViTAttention(nn.Module):
    """Multi-head self-attention with a packed ``qkv`` projection (official keys ``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class ViTMlp(nn.Module):
    """FFN of a ViT block: ``fc1`` → exact GELU → ``fc2``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm ViT block with LayerScale: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViTMlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Encoder(nn.Module):
    """DINOv2 ViT with DINOv2's parameter names, pre-norm feature and position interpolation.

    Parameters
    ----------
    config : EncoderConfig
        Shape of the ViT.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        grid = config.pretrain_size // config.patch_size
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        # Present in the official checkpoint (masked-image pretraining); unused at inference.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.Sequential(
            *(ViTBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth))
        )
        # Loaded with the checkpoint but not applied: the official feature is the pre-norm output.
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """Random initialisation for untrained use (tests, training); checkpoints overwrite it."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

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
