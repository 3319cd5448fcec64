"""Layer 4 — named models: the preset registry, weight files (safe reading, key maps, checks), the cache,
``from_pretrained`` and ``napari-sine train`` exports."""
