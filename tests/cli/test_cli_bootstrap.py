"""``napari-sine rank``, ``review`` and ``export`` as a user runs them, on the bundled sample.

Each command runs as the installed console script in a fresh process (see tests/user_flows): propagate the
sample with the embedded model, rank the targets, record decisions, export every format.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from user_flows.user_flow_helpers import (
    SAMPLE_DIR,
    assert_exit_ok,
    napari_sine_command,
    run_flow,
    sample_targets,
)

from sine_model.bootstrap.dataset import verify_checksums
from sine_model.bootstrap.review import read_review
from sine_model.metrics import match_instances


def sine(tmp_path, *argv):
    return run_flow([*napari_sine_command(), *map(str, argv)], tmp_path)


@pytest.fixture(scope="module")
def propagated(tmp_path_factory):
    """The sample propagated once (module-wide): reference → the three targets."""
    tmp_path = tmp_path_factory.mktemp("propagated")
    out = tmp_path / "results"
    process = sine(
        tmp_path,
        "propagate",
        "--ref",
        SAMPLE_DIR / "reference.png",
        "--ref-labels",
        SAMPLE_DIR / "reference_labels.tif",
        "--targets",
        *sample_targets(),
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert_exit_ok(process)
    return out


def copy_results(src, dst):
    dst.mkdir()
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_rank_lists_every_target_and_starts_the_review(propagated, tmp_path):
    results = copy_results(propagated, tmp_path / "results")
    process = sine(tmp_path, "rank", results, "--targets", *sample_targets())
    assert_exit_ok(process)
    assert "3 targets (3 proposed)" in process.stdout
    with open(results / "ranking.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(r["target"]) for r in rows) == [0, 1, 2]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    review = read_review(results)
    assert [t.name for t in review.targets] == ["target_1", "target_2", "target_3"]
    assert review.run["targets"] == [str(p.resolve()) for p in sample_targets()]


def test_review_then_export_every_format(propagated, tmp_path):
    results = copy_results(propagated, tmp_path / "results")
    assert_exit_ok(sine(tmp_path, "rank", results, "--targets", *sample_targets()))
    fixed = tmp_path / "fixed_2.tif"
    truth = tifffile.imread(SAMPLE_DIR / "target_2_labels.tif")
    tifffile.imwrite(fixed, truth)
    process = sine(
        tmp_path,
        "review",
        results,
        "--accept",
        "0",
        "--correct",
        f"1={fixed}",
        "--skip",
        "2",
        "--who",
        "tester",
    )
    assert_exit_ok(process)
    review = read_review(results)
    assert [t.status for t in review.targets] == ["accepted", "corrected", "skipped"]
    assert review[1].history[-1].who == "tester"
    ranked = sine(tmp_path, "rank", results)
    assert_exit_ok(ranked)
    assert "every target is reviewed" in ranked.stdout  # only proposed targets are listed
    sources = [SAMPLE_DIR / n for n in ("reference.png", "reference_labels.tif")] + sample_targets()
    before = {p: p.read_bytes() for p in sources}
    proposals = tifffile.imread(results / "labels_instance.tif")
    for fmt in ("tiff", "coco", "ome-zarr", "napari-sine"):
        out = tmp_path / f"ds_{fmt}"
        process = sine(
            tmp_path,
            "export",
            results,
            "--out",
            out,
            "--format",
            fmt,
            "--ref",
            SAMPLE_DIR / "reference.png",
            "--ref-labels",
            SAMPLE_DIR / "reference_labels.tif",
        )
        assert_exit_ok(process)
        assert "3 samples" in process.stdout, process.stdout
        assert verify_checksums(out) == []
        recipe = json.loads((out / "recipe.json").read_text())
        assert recipe["review"] == {"proposed": 0, "accepted": 1, "corrected": 1, "skipped": 1}
        if fmt == "tiff":
            assert sorted(p.name for p in (out / "masks").iterdir()) == [
                "00000_target_1.tif",
                "00001_target_2.tif",
                "ref_reference.tif",
            ]
            accepted = tifffile.imread(out / "masks" / "00000_target_1.tif")
            assert match_instances(proposals[0], accepted, 0.99).f1 == 1.0  # the proposals, as accepted
            assert np.array_equal(tifffile.imread(out / "masks" / "00001_target_2.tif"), truth)
    assert {p: p.read_bytes() for p in sources} == before
    again = sine(tmp_path, "export", results, "--out", tmp_path / "ds_tiff")
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr


def test_export_without_decisions_says_what_to_do(propagated, tmp_path):
    results = copy_results(propagated, tmp_path / "results")
    assert_exit_ok(sine(tmp_path, "rank", results))
    process = sine(tmp_path, "export", results, "--out", tmp_path / "ds")
    assert process.returncode == 2 and "napari-sine review" in process.stderr
    assert not (tmp_path / "ds").exists()
