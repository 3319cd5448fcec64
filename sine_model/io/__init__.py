"""Layer 1 — files: reading TIFF/PNG/JPEG/zarr images (lazily when large) and streaming results out."""
