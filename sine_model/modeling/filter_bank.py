"""A fixed multiscale filter bank (ilastik-style pixel features) as a non-trainable torch module.

For every scale σ the bank computes, on the grey value of the (de-normalised) image,

* the Gaussian smoothing ``G_σ * I``;
* the scale-normalised gradient magnitude ``σ·|∇(G_σ * I)|``;
* the scale-normalised Laplacian of Gaussian ``σ²·ΔG_σ * I``;
* the two eigenvalues of the scale-normalised Hessian ``σ²·H`` (larger first);
* the square roots of the two eigenvalues of the structure tensor: gradients at ``σ/2`` (scale
  normalised), their products smoothed at ``σ``;

and, with ``colour=True``, the Gaussian smoothing of each RGB channel. ``include_raw`` adds the RGB
values themselves (53 channels with the defaults). All filters are separable Gaussian derivatives
applied with ``conv2d`` (one horizontal and one vertical pass per scale) and replicate padding;
scales above ``base_sigma`` run on a box-downsampled pyramid level so kernels stay short. The
kernels are non-persistent buffers: the bank adds nothing to a state dict and nothing to train.

The separable passes stay dense ``conv2d`` calls although most of their kernel slots are zero: on a CPU
(oneDNN, one thread) grouped or depthwise versions of them measured no faster (issue 22,
docs/benchmarks.md), also in channels-last layout once the channel copies they need are counted; what did
pay is padding each scale's input once, resizing each scale in one call, and smoothing the structure
tensor's products (a depthwise pass of their own) in channels-last layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sine_model.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["FilterBank", "gaussian_kernels"]

GREY_FEATURES_PER_SCALE = 7  # smoothing, gradient, LoG, 2 Hessian eigenvalues, 2 structure-tensor ones


def gaussian_kernels(sigma: float, truncate: float = 3.0) -> Tensor:
    """1-D Gaussian kernel and its first and second derivatives, shape (3, 2r + 1), float32.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels (> 0).
    truncate : float
        Kernel radius in units of σ (at least 1 pixel).

    Returns
    -------
    Tensor
        Rows: ``g`` (sums to 1) and the first and second derivative filters, oriented for ``conv2d``
        (a correlation) and scaled to respond exactly 1 to ``x`` and ``x²/2``; both have zero sum, so
        constant images give zero derivatives.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device="cpu")  # constants: made on the CPU
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    d1 = x / sigma**2 * g  # conv2d correlates: this orientation differentiates
    d1 = d1 / (x * d1).sum()  # unit response to a unit ramp
    d2 = (x**2 / sigma**4 - 1 / sigma**2) * g
    d2 = d2 - d2.mean()
    d2 = d2 / (0.5 * (x**2 * d2).sum())  # unit response to x²/2
    return torch.stack([g, d1, d2]).float()


def _eigen_sym(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (larger, smaller) of the symmetric 2×2 matrices [[a, c], [c, b]]."""
    mean = 0.5 * (a + b)
    root = torch.sqrt(0.25 * (a - b) ** 2 + c**2 + 1e-12)
    return mean + root, mean - root


class FilterBank(nn.Module):
    """Fixed multiscale pixel features of normalised images (no trainable parameters).

    Scales above ``base_sigma`` are computed on a box-downsampled copy of the image (a pyramid level
    ``k`` with ``2^k <= σ / base_sigma``), with σ reduced accordingly, so every kernel stays short;
    each feature is then resized to the output grid (area pooling down, bilinear up). Derivatives are
    scale-normalised, so they do not depend on the level they were computed on.

    Parameters
    ----------
    sigmas : sequence of float
        Scales in input pixels (default ilastik-like 0.7 … 8).
    colour : bool
        Add the Gaussian-smoothed R, G and B channels at every scale.
    include_raw : bool
        Add the R, G and B values (area-pooled to the output grid).
    stride : int
        Output grid is ``(H // stride, W // stride)``.
    base_sigma : float
        Largest σ (in level pixels) before switching to the next pyramid level.
    truncate : float
        Kernel radius in units of σ.
    """

    def __init__(
        self,
        sigmas: Sequence[float] = (0.7, 1.6, 3.5, 5.0, 8.0),
        colour: bool = True,
        include_raw: bool = True,
        stride: int = 1,
        base_sigma: float = 1.0,
        truncate: float = 3.0,
    ) -> None:
        super().__init__()
        if not sigmas or min(sigmas) <= 0:
            raise ValueError(f"FilterBank needs positive sigmas, got {tuple(sigmas)}")
        if stride < 1 or base_sigma <= 0:
            raise ValueError(f"stride must be >= 1 and base_sigma > 0, got {stride}, {base_sigma}")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.colour, self.include_raw = colour, include_raw
        self.stride, self.base_sigma, self.truncate = stride, base_sigma, truncate
        self.levels: tuple[int, ...] = tuple(
            max(0, int(math.floor(math.log2(s / base_sigma)))) for s in self.sigmas
        )
        # σ on each level, in level pixels (the 2^k box average already adds (4^k - 1)/12 of variance)
        self.local_sigmas: tuple[float, ...] = tuple(
            math.sqrt(max(s**2 - (4**k - 1) / 12, 0.25)) / 2**k
            for s, k in zip(self.sigmas, self.levels, strict=True)
        )
        self.inner_sigmas: tuple[float, ...] = tuple(max(s / 2, 0.5) for s in self.local_sigmas)
        for i, (local, inner) in enumerate(zip(self.local_sigmas, self.inner_sigmas, strict=True)):
            horizontal, vertical = _scale_weights(
                gaussian_kernels(local, truncate), gaussian_kernels(inner, truncate)
            )
            self.register_buffer(f"horizontal_{i}", horizontal, persistent=False)
            self.register_buffer(f"vertical_{i}", vertical, persistent=False)
        for name, values in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(values, device="cpu").view(1, 3, 1, 1), persistent=False)

    @property
    def _per_scale(self) -> int:
        """Output channels of one scale: ``7 + 3·colour``."""
        return GREY_FEATURES_PER_SCALE + (3 if self.colour else 0)

    @property
    def num_features(self) -> int:
        """Output channels: ``(7 + 3·colour)·len(sigmas) + 3·include_raw``."""
        return self._per_scale * len(self.sigmas) + (3 if self.include_raw else 0)

    def extra_repr(self) -> str:
        return (f"sigmas={self.sigmas}, levels={self.levels}, colour={self.colour}, "
                f"include_raw={self.include_raw}, stride={self.stride}, num_features={self.num_features}")

    def _scale_features(self, rgb: Tensor, i: int, out: Tensor | None = None) -> Tensor:
        """The features of scale ``i`` from one pyramid level ``rgb`` (B, 3, h, w), stacked (B, f, h, w)
        (written into ``out`` where given)."""
        sigma, inner = self.local_sigmas[i], self.inner_sigmas[i]
        horizontal, vertical = getattr(self, f"horizontal_{i}"), getattr(self, f"vertical_{i}")
        radius = horizontal.shape[-1] // 2
        # Replicating rows commutes with the horizontal pass, so one padding of the 4-channel input
        # serves both passes (the same values as padding the 8-channel intermediate, at half the copy).
        x = F.pad(torch.cat([rgb.mean(dim=1, keepdim=True), rgb], dim=1), (radius,) * 4, mode="replicate")
        x = F.conv2d(F.conv2d(x, horizontal), vertical)
        smooth, gx, gy, hxx, hyy, hxy, ix, iy = x[:, :8].split(1, dim=1)
        products = torch.cat([ix * ix, iy * iy, ix * iy], dim=1) * inner**2
        g = horizontal[5, 1, 0]  # the outer Gaussian (see _scale_weights)
        # the depthwise passes run in channels-last layout, oneDNN's fast path for them (the same values,
        # 3-5x faster than on planar channels on one 512² image)
        products = F.pad(products, (radius,) * 4, mode="replicate")
        products = products.contiguous(memory_format=torch.channels_last)
        for kernel in (g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)):
            products = F.conv2d(products, kernel.expand(3, 1, *kernel.shape[2:]).contiguous(), groups=3)
        products = products.contiguous()
        big, small = _eigen_sym(products[:, :1], products[:, 1:2], products[:, 2:])
        features = [
            smooth,
            sigma * torch.sqrt(gx**2 + gy**2 + 1e-12),
            sigma**2 * (hxx + hyy),
            *(sigma**2 * e for e in _eigen_sym(hxx, hyy, hxy)),
            big.clamp_min(0).sqrt(),
            small.clamp_min(0).sqrt(),
        ]
        if self.colour:
            features.append(x[:, 8:])
        return torch.cat(features, dim=1, out=out) if out is not None else torch.cat(features, dim=1)

    def forward(self, images: Tensor, out: Tensor | None = None) -> Tensor:
        """ImageNet-normalised images (B, 3, H, W) → features (B, F, H // stride, W // stride).

        ``out``: a float32 tensor of that shape to write the features into (reused memory: a fresh
        65 MB output cost about 16000 page faults per 512² image; not with autograd).
        """
        height, width = images.shape[-2:]
        size = (max(1, height // self.stride), max(1, width // self.stride))
        shape = (images.shape[0], self.num_features, *size)
        if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32
                                or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous float32 tensor of shape {shape}, got "
                             f"{out.dtype} {tuple(out.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            rgb = images.float() * self.std + self.mean
            pyramid = {0: rgb}
            for level in range(1, max(self.levels) + 1):
                prev = pyramid[level - 1]
                pyramid[level] = F.avg_pool2d(prev, 2, ceil_mode=True) if min(prev.shape[-2:]) > 1 else prev
            if torch.is_grad_enabled():  # (writing into one output does not support autograd)
                if out is not None:
                    raise ValueError("out= needs autograd off (torch.no_grad)")
                features = [_resize(rgb, size)] if self.include_raw else []
                features.extend(_resize(self._scale_features(pyramid[level], i), size)
                                for i, level in enumerate(self.levels))
                return torch.cat(features, dim=1).to(images.dtype)
            # each scale's features are written (resized together) into their channels of one output:
            # no concatenation of the whole stack at the end (a copy of 63 × H × W floats)
            out = rgb.new_empty(shape) if out is None else out
            first = 3 if self.include_raw else 0
            if self.include_raw:
                _resize(rgb, size, out[:, :3])
            for i, level in enumerate(self.levels):
                place = out[:, first : first + self._per_scale]
                if tuple(pyramid[level].shape[-2:]) == size and place.is_contiguous():
                    self._scale_features(pyramid[level], i, place)
                else:
                    _resize(self._scale_features(pyramid[level], i), size, place)
                first += self._per_scale
            return out.to(images.dtype)


def _scale_weights(outer: Tensor, inner: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal (8, 4, 1, L) and vertical (11, 8, L, 1) weights of one scale's separable filters.

    Input channels are ``[grey, R, G, B]``; ``g``, ``d1``, ``d2`` are the rows of ``outer`` and
    ``ig``, ``id1`` those of ``inner``, all zero-padded to one length L. The horizontal pass gives
    ``[g, d1, d2, ig, id1]`` of the grey value and ``g`` of R, G and B; the vertical pass turns them
    into ``[G, Gx, Gy, Gxx, Gyy, Gxy, iGx, iGy, G·R, G·G, G·B]`` (x = width, y = height).
    """
    radius = max(outer.shape[-1], inner.shape[-1]) // 2
    length = 2 * radius + 1

    def padded(kernel: Tensor) -> Tensor:
        extra = radius - kernel.shape[-1] // 2
        return F.pad(kernel, (extra, extra))

    g, d1, d2 = (padded(k) for k in outer)
    ig, id1 = padded(inner[0]), padded(inner[1])
    horizontal = torch.zeros(8, 4, 1, length)
    plan = [(0, g), (0, d1), (0, d2), (0, ig), (0, id1), (1, g), (2, g), (3, g)]
    for row, (channel, kernel) in enumerate(plan):
        horizontal[row, channel, 0] = kernel
    vertical = torch.zeros(11, 8, length, 1)
    plan = [(0, g), (1, g), (0, d1), (2, g), (0, d2), (1, d1), (4, ig), (3, id1), (5, g), (6, g), (7, g)]
    for row, (channel, kernel) in enumerate(plan):
        vertical[row, channel, :, 0] = kernel
    return horizontal, vertical


def _resize(x: Tensor, size: tuple[int, int], out: Tensor | None = None) -> Tensor:
    """Area-pool (shrinking) or bilinearly interpolate (enlarging) ``x`` to ``size`` (into ``out``)."""
    if out is None:
        if tuple(x.shape[-2:]) == size:
            return x
        if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
            return F.adaptive_avg_pool2d(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if out.is_contiguous() and not (x.shape[-2] >= size[0] and x.shape[-1] >= size[1]):
        # F.interpolate's own kernel, writing in place
        return torch.ops.aten.upsample_bilinear2d.out(x, size, False, None, None, out=out)
    return out.copy_(_resize(x, size))
