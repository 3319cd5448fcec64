"""Layer 1 — images in: RGB conversion, resizing/normalisation rules, the reference-fitted grey projection."""
