"""Layer 4 — running a model over targets: the :class:`~sine_model.engine.propagator.Propagator`,
input checks and iteration, tiling, stitching, feature caches, time-lapse memory, device choice."""
