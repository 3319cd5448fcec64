"""The reference projection: objects bright whatever the stain, fitted once, same for every image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sine_model.engine.propagator import Propagator
from sine_model.preprocess.projection import fit_reference_projection
from sine_model.preprocess.transforms import to_rgb_float


def stained(seed: int, size=(48, 64)):
    """H&E-like: dark purple disks on a light pink background, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    labels = np.zeros(size, np.int32)
    for value in range(1, 6):
        cy, cx = rng.integers(8, size[0] - 8), rng.integers(8, size[1] - 8)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 25) & (labels == 0)] = value
    pink, purple = np.array([235, 180, 200]), np.array([110, 60, 150])
    rgb = np.where(labels[..., None] > 0, purple, pink) + rng.normal(0, 8, (*size, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8), labels


def test_stained_objects_come_out_bright_and_targets_share_the_fit():
    image, labels = stained(0)
    projection = fit_reference_projection([to_rgb_float(image)], [labels])
    grey = projection.grey(to_rgb_float(image))
    assert grey.dtype == np.uint8 and grey.shape == labels.shape
    assert grey[labels > 0].mean() > 200 and grey[labels == 0].mean() < 60
    target, target_labels = stained(1)
    projected = projection.grey(to_rgb_float(target))  # the reference's fit, not the target's labels
    assert projected[target_labels > 0].mean() > 200 and projected[target_labels == 0].mean() < 60
    rgb = projection.apply(to_rgb_float(target))
    assert rgb.shape == (*labels.shape, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_allclose(rgb[..., 0], projected / 255.0, atol=1e-6)


def test_dark_objects_on_grey_are_inverted_and_bad_references_are_refused():
    image, labels = stained(2)
    grey_image = image.mean(-1).astype(np.uint8)  # dark objects on a bright background
    projection = fit_reference_projection([to_rgb_float(grey_image)], [labels])
    grey = projection.grey(to_rgb_float(grey_image))
    assert grey[labels > 0].mean() > grey[labels == 0].mean() + 100
    with pytest.raises(ValueError, match="object and background"):
        fit_reference_projection([to_rgb_float(grey_image)], [np.zeros_like(labels)])


def test_propagator_projects_references_targets_and_adaptation_images():
    from conftest import build_embedded

    torch.manual_seed(0)
    model = build_embedded("filterbank").eval()
    image, labels = stained(3)
    plain = Propagator(model, "cpu", pad=112, instance_source="semantic")
    projected = Propagator(model, "cpu", pad=112, instance_source="semantic", project_inputs=True)
    for engine in (plain, projected):
        engine.set_references([(image, labels)])
    assert plain.training_image(image) is image
    grey = projected.training_image(image)
    assert grey.dtype == np.uint8 and grey.shape == labels.shape and grey[labels > 0].mean() > 200
    target = stained(4)[0]
    a = next(projected.propagate([target], modes=("semantic",))).labels["semantic"]
    b = next(plain.propagate([target], modes=("semantic",))).labels["semantic"]
    assert a.shape == b.shape == labels.shape
    # the projected engine sees the same grey image as an engine given that grey image directly
    direct = Propagator(model, "cpu", pad=112, instance_source="semantic")
    direct.set_references([(projected.training_image(image), labels)])
    c = next(direct.propagate([projected.training_image(target)], modes=("semantic",))).labels["semantic"]
    np.testing.assert_array_equal(a, c)
    projected.set_project_inputs(False)
    with pytest.raises(ValueError, match="no references"):
        next(projected.propagate([target]))
