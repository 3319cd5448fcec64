"""Layer 2 — the nn modules: DINOv2 ViT and embedded encoders, neck, mask pooling, fusion, M-Former, SINE.

One description of a model (:class:`~sine_model.modeling.config.ModelConfig`) and one builder
(:func:`~sine_model.modeling.config.build_model`). Nothing here reads files or knows presets.
"""
