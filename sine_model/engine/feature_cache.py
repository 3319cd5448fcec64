"""A byte-bounded LRU cache of encoder features, keyed by image content and model geometry."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
import torch

__all__ = ["FeatureCache", "content_key"]


def content_key(array: np.ndarray | torch.Tensor) -> str:
    """A digest of an array's bytes, dtype and shape (BLAKE2b, 128 bits)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((array.dtype.str, array.shape)).encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class FeatureCache:
    """Least-recently-used mapping key → tensor, holding at most ``max_bytes`` of tensor data.

    Parameters
    ----------
    max_bytes : int
        Budget for the stored tensors; 0 disables caching. A single tensor larger than the budget is
        not stored.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        size = value.element_size() * value.nelement()
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.element_size() * old.nelement()
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= evicted.element_size() * evicted.nelement()

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
