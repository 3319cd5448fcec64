"""CachedEncoder: encoder features reused by content, the neck always run, stale entries dropped."""

from __future__ import annotations

import torch
from conftest import TINY_P, build_tiny

from sine_model.engine.cached_encoder import CachedEncoder


def tiny_setup(n_images: int):
    """A tiny model, a CachedEncoder for it (CPU, full precision) and ``n_images`` random inputs."""
    model = build_tiny()
    encoder = CachedEncoder(model, torch.device("cpu"), None, TINY_P)
    images = torch.randn(n_images, 3, TINY_P, TINY_P, generator=torch.Generator().manual_seed(0))
    return model, encoder, images


def test_reuses_encoder_features_and_always_runs_the_neck():
    model, encoder, images = tiny_setup(2)
    with torch.inference_mode():
        first = encoder.encode(model, images)
        assert len(encoder.cache) == 2 and encoder.cache.hits == 0
        again = encoder.encode(model, images[[1, 0]])  # same content, other order: all hits
        assert encoder.cache.hits == 2
        torch.testing.assert_close(again, first[[1, 0]])
        expected = model.image_encoder.neck(model.image_encoder.encoder(images))
        torch.testing.assert_close(first, expected)
        other = build_tiny(seed=1)  # another neck on the same encoder weights
        other.image_encoder.encoder.load_state_dict(model.image_encoder.encoder.state_dict())
        torch.testing.assert_close(encoder.encode(other, images), other.image_encoder.neck(
            model.image_encoder.encoder(images)))  # a new neck on cached encoder features


def test_clear_refingerprints_a_changed_encoder():
    model, encoder, images = tiny_setup(1)
    with torch.inference_mode():
        before = encoder.encode(model, images)
        with torch.no_grad():
            model.image_encoder.encoder.patch_embed.proj.bias.add_(0.5)  # weights changed in place
        stale = encoder.encode(model, images)
        torch.testing.assert_close(stale, before)  # the cache cannot know: hence clear()
        encoder.clear(model)
        assert len(encoder.cache) == 0
        fresh = encoder.encode(model, images)
        assert not torch.allclose(fresh, before)
        torch.testing.assert_close(fresh, model.image_encoder.neck(model.image_encoder.encoder(images)))
