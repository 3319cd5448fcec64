"""Training pairs from a folder of images and label images, grouped by a manifest (files in tmp_path)."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from training_helpers import block_labels, check_episode

from sine_model.training.augment import AugmentConfig
from sine_model.training.folders import FileItem, folder_groups
from sine_model.training.pairs import PairConfig, PairSampler


def write_folder(root, names_groups, manifest=True):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = []
    for k, (name, group) in enumerate(names_groups):
        labels = block_labels((40, 50), block=10, first_id=1 + k).astype(np.uint16)
        image = (labels * 7 % 255).astype(np.uint8)
        if k % 2:
            iio.imwrite(root / "images" / f"{name}.png", np.stack([image] * 4, axis=-1))  # RGBA png
        else:
            tifffile.imwrite(root / "images" / f"{name}.tif", image)
        tifffile.imwrite(root / "labels" / f"{name}.tif", labels)
        rows.append({"image_id": name, "group": group})
    if manifest:
        with open(root / "manifest.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["image_id", "group"])
            writer.writeheader()
            writer.writerows(rows)


def test_folder_groups_with_manifest(tmp_path):
    write_folder(tmp_path, [("a", "g1"), ("b", "g1"), ("c", "g2")])
    groups = folder_groups(tmp_path)
    assert {k: len(v) for k, v in groups.items()} == {"g1": 2, "g2": 1}
    item = groups["g1"][1]()
    assert isinstance(groups["g1"][1], FileItem) and item.labels.shape == (40, 50)
    assert item.image.shape == (40, 50, 4) and item.image.dtype == np.uint8
    assert set(folder_groups(tmp_path, exclude=["g2"])) == {"g1"}
    assert set(folder_groups(tmp_path, include=["g2"])) == {"g2"}
    with pytest.raises(ValueError, match="unknown groups"):
        folder_groups(tmp_path, include=["nope"])
    config = PairConfig(pad=56, augment=AugmentConfig(out_size=48))
    sampler = PairSampler(groups, config, seed=0)
    assert sampler.group_names == ["g1", "g2"]
    for _ in range(4):
        check_episode(sampler.sample(), 56)


def test_folder_groups_without_manifest_and_missing_labels(tmp_path):
    write_folder(tmp_path, [("a", "x"), ("b", "y")], manifest=False)
    groups = folder_groups(tmp_path)
    assert list(groups) == ["all"] and len(groups["all"]) == 2
    (tmp_path / "labels" / "b.tif").unlink()
    with pytest.raises(ValueError, match="lack an image or label"):
        folder_groups(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        folder_groups(tmp_path / "nowhere")
