"""Model inputs → neck features, with the frozen encoder's output cached by content.

The encoder (DINOv2 or an embedded one) is frozen everywhere in napari-sine, so its output for an input
tile depends only on the tile's content and the encoder weights: the engine keeps it in a
:class:`~sine_model.engine.feature_cache.FeatureCache` and runs only the neck again. That is why adapting the
neck, choosing other references or calibrating re-encodes nothing already seen.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from sine_model.engine.feature_cache import FeatureCache, content_key
from sine_model.modeling.sine import SINE

__all__ = ["CachedEncoder", "ENCODER_BATCH_PIXELS"]

#: Input pixels per encoder call (4 tiles of 224², 1 of 448² or more). The decoder gains from large
#: batches, the encoder does not: on a CPU its activations then leave the caches (measured with the
#: embedded model: 20 tiles of 224² per call cost more CPU time per tile than 1 to 4).
ENCODER_BATCH_PIXELS = 4 * 224 * 224


class CachedEncoder:
    """Encode (B, 3, P, P) model inputs into neck features, reusing cached encoder features.

    Parameters
    ----------
    model : SINE
        The model whose encoder fingerprints the cache entries (the neck of the model passed to
        :meth:`encode` runs on every call).
    device : torch.device
        Where the model runs.
    autocast_dtype : torch.dtype, optional
        Autocast precision of the model calls (None: full precision).
    pad : int
        Model input side P (part of the cache key).
    cache_bytes : int
        Budget of the cache (0 disables it).
    """

    def __init__(self, model: SINE, device: torch.device, autocast_dtype: torch.dtype | None, pad: int,
                 cache_bytes: int = 1 << 30) -> None:
        self.device, self.autocast_dtype, self.pad = device, autocast_dtype, pad
        self.cache = FeatureCache(cache_bytes)
        self._encoder_key = _fingerprint(model)

    def autocast(self) -> AbstractContextManager:
        """The autocast context of a model call (a no-op in full precision)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def encode(self, model: SINE, images: torch.Tensor) -> torch.Tensor:
        """Neck features of ``model`` for (B, 3, P, P) ``images``, encoder features cached or computed."""
        keys = [(content_key(img), self._encoder_key, self.pad, self.autocast_dtype) for img in images]
        cached = [self.cache.get(k) for k in keys]
        missing = [i for i, c in enumerate(cached) if c is None]
        step = max(1, ENCODER_BATCH_PIXELS // (images.shape[-2] * images.shape[-1]))
        for start in range(0, len(missing), step):
            part = missing[start : start + step]
            with self.autocast():
                fresh = model.image_encoder.encoder(images[part].to(self.device))
            for i, feat in zip(part, fresh, strict=True):
                cached[i] = feat
                self.cache.put(keys[i], feat)
        vit = torch.stack([c.to(self.device) for c in cached])
        with self.autocast():
            return model.image_encoder.neck(vit)

    def clear(self, model: SINE) -> None:
        """Forget the cached features and fingerprint ``model``'s encoder again (its weights changed)."""
        self.cache.clear()
        self._encoder_key = _fingerprint(model)


def _fingerprint(model: SINE) -> str:
    # a digest of the start of every encoder tensor catches a swapped-in checkpoint (any encoder)
    tensors = list(model.image_encoder.encoder.state_dict().values())
    if not tensors:
        return "parameter-free"
    return content_key(torch.cat([t.detach().float().flatten()[:4096].cpu() for t in tensors]))
