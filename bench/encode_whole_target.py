"""Would encoding a whole target once (then cropping features per tile) match per-tile encoding? (issue 22)

The embedded model's encoder is convolutional, so in principle the target could be encoded once and each
tile's features cropped from the result, instead of encoding every overlapping tile. This measures, on a
504² crop of the bundled sample's first target (36 × 36 cells of 14 px) and 9 tiles of 224² at
14-aligned offsets (0, 140, 280), how far the cropped features are from the per-tile ones:

* relative difference ``|crop - tile| / |tile|`` of the encoder output and of the neck output;
* cosine similarity per grid cell of the neck output: mean, mean over the interior (3 cells from the
  tile's border) and minimum;

and the CPU time (``time.process_time``, ``--threads``) of one whole-target encode + neck against the 9
per-tile ones, ``--repeats`` times interleaved. GroupNorm in the encoder normalises over the whole input,
so even interior cells differ; border cells also see real neighbours instead of the tile's edge.

Usage::

    python bench/encode_whole_target.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time

import torch

TILE, SIDE, OFFSETS, CELL = 224, 504, (0, 140, 280), 14


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sine_model import from_pretrained
    from sine_model.preprocess.transforms import rgb_to_model_input, to_rgb_float
    from sine_model.sample_data import load_sample

    image_encoder = from_pretrained("sine-embedded").eval().image_encoder
    rgb = to_rgb_float(load_sample().targets[0][:SIDE, :SIDE])
    whole_input = rgb_to_model_input(rgb, rgb.shape[:2], SIDE)
    tiles = {(y, x): rgb_to_model_input(rgb[y : y + TILE, x : x + TILE], (TILE, TILE), TILE)
             for y in OFFSETS for x in OFFSETS}
    grid = TILE // CELL
    print(f"load (1 min) {os.getloadavg()[0]:.1f}")
    print("| tile (y, x) | encoder rel. diff | neck rel. diff | cosine mean | cosine interior | cosine min |")
    print("|---|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        whole_features = image_encoder.encoder(whole_input)
        whole = image_encoder.neck(whole_features)
        for (y, x), tile in tiles.items():
            cells = (slice(None), slice(y // CELL, y // CELL + grid), slice(x // CELL, x // CELL + grid))
            own_features = image_encoder.encoder(tile)[0]
            own = image_encoder.neck(own_features[None])[0]
            crop_features, crop = whole_features[0][cells], whole[0][cells]
            cosine = torch.nn.functional.cosine_similarity(crop, own, dim=0)
            print(f"| ({y}, {x}) | {rel(crop_features, own_features):.3f} | {rel(crop, own):.3f} "
                  f"| {cosine.mean():.3f} | {cosine[3:-3, 3:-3].mean():.3f} | {cosine.min():.3f} |")
        for repeat in range(args.repeats):
            start = time.process_time()
            image_encoder(whole_input)
            whole_s = time.process_time() - start
            start = time.process_time()
            for tile in tiles.values():
                image_encoder(tile)
            tiles_s = time.process_time() - start
            print(f"repeat {repeat + 1}: CPU s whole {SIDE}² encode + neck {whole_s:.3f}, "
                  f"{len(tiles)} tiles of {TILE}² {tiles_s:.3f} (load {os.getloadavg()[0]:.1f})")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


if __name__ == "__main__":
    main()
