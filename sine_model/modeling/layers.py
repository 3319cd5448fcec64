"""Transformer building blocks of the SINE decoder, with the official parameter names.

The official code uses ``nn.MultiheadAttention`` in sequence-first layout. We keep its packed parameter
names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) so checkpoints load strictly, but run
batch-first through :func:`torch.nn.functional.scaled_dot_product_attention`, which is much faster on
CPU and agrees with the plain softmax attention to float tolerance.

Attention masks in this module follow the SDPA convention: a boolean ``allowed`` tensor where ``True``
means "may attend". (``nn.MultiheadAttention`` uses the opposite convention; the official notes speak of
blocked positions.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LayerNorm2d",
    "PackedAttention",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "FFNLayer",
    "FFN_ROW_BLOCK",
    "MLP",
]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an (B, C, H, W) tensor.

    Matches SAM's ``LayerNorm2d`` and detectron2's ``LayerNorm`` (both eps 1e-6 in SINE): statistics
    over C only, biased variance, affine ``weight`` and ``bias`` of shape (C,).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class PackedAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout, batch-first.

    Parameters
    ----------
    dim : int
        Model width.
    num_heads : int
        Number of heads; must divide ``dim``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Attend ``query`` (B, L, C) to ``key``/``value`` (B, S, C).

        ``allowed`` is a bool mask broadcastable to (B, heads, L, S), True where attention is allowed,
        or the equivalent additive float mask (0 allowed, −inf blocked) that SDPA would build from it.
        """
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._heads(F.linear(query, w_q, b_q))
        k = self._heads(F.linear(key, w_k, b_k))
        v = self._heads(F.linear(value, w_v, b_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Residual self-attention; ``pre_norm`` selects pre- or post-norm (official ``normalize_before``)."""

    def __init__(self, dim: int, num_heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = PackedAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, pos: Tensor | None = None, allowed: Tensor | None = None) -> Tensor:
        if self.pre_norm:
            y = self.norm(x)
            q = _with_pos(y, pos)
            return x + self.self_attn(q, q, y, allowed)
        q = _with_pos(x, pos)
        return self.norm(x + self.self_attn(q, q, x, allowed))


class CrossAttentionLayer(nn.Module):
    """Residual cross-attention; the memory is used un-normalised as the value."""

    def __init__(self, dim: int, num_heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.multihead_attn = PackedAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        pos: Tensor | None = None,
        memory_pos: Tensor | None = None,
        allowed: Tensor | None = None,
        key: Tensor | None = None,
    ) -> Tensor:
        """``key`` (optional) is ``memory + memory_pos`` precomputed, e.g. once for several layers."""
        key = _with_pos(memory, memory_pos) if key is None else key
        if self.pre_norm:
            return x + self.multihead_attn(_with_pos(self.norm(x), pos), key, memory, allowed)
        return self.norm(x + self.multihead_attn(_with_pos(x, pos), key, memory, allowed))


#: Without autograd, :class:`FFNLayer` runs over blocks of this many tokens (issue 22): the hidden
#: activations of 4096 pixel tokens at width 2048 are 32 MB, made twice (linear, ReLU) and faulted in
#: fresh by the allocator on every call; a block's are 4 MB and are reused from cache.
FFN_ROW_BLOCK = 512


class FFNLayer(nn.Module):
    """Residual ReLU feed-forward block (linear1 → ReLU → linear2)."""

    def __init__(self, dim: int, hidden_dim: int, pre_norm: bool) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor) -> Tensor:
        rows = x.shape[:-1].numel()
        if torch.is_grad_enabled() or rows <= FFN_ROW_BLOCK:
            return self._block(x, inplace=False)
        # Row by row the same operations (each token's output depends on that token only).
        flat = x.reshape(rows, x.shape[-1])
        out = torch.empty_like(flat)
        for start in range(0, rows, FFN_ROW_BLOCK):
            stop = start + FFN_ROW_BLOCK
            out[start:stop] = self._block(flat[start:stop], inplace=True)
        return out.view(x.shape)

    def _block(self, x: Tensor, inplace: bool) -> Tensor:
        if self.pre_norm:
            return x + self.linear2(F.relu(self.linear1(self.norm(x)), inplace=inplace))
        return self.norm(x + self.linear2(F.relu(self.linear1(x), inplace=inplace)))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (not after the last)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


def xavier_init_matrices(module: nn.Module) -> None:
    """Xavier-uniform every parameter with more than one dimension (official attention/FFN init)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
