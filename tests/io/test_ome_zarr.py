"""OME-Zarr in and out: the labels store (read back by ome-zarr's reader), multiscale input levels, file
targets and per-target records."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sine_model import InputFileError
from sine_model.engine.run_manifest import differences
from sine_model.engine.stitching import ObjectScore, TargetResult
from sine_model.io import result_writer
from sine_model.io.file_targets import FileTargets
from sine_model.io.ome_zarr_labels import OME_ZARR_NAME, OmeZarrLabels
from sine_model.io.readers import open_image
from sine_model.io.target_records import (
    TargetRecord,
    read_record,
    record_path,
    write_record,
    write_scores_table,
)

ome_zarr = pytest.importorskip("ome_zarr")
zarr = pytest.importorskip("zarr")


def labels_of(index: int, shape=(20, 30)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    return {"instance": rng.integers(0, 5, shape).astype(np.uint16),
            "semantic": rng.integers(0, 2, shape).astype(np.uint8)}


def test_store_is_read_by_ome_zarrs_reader(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    path = tmp_path / OME_ZARR_NAME
    store = OmeZarrLabels.create(path, ("instance", "semantic"), 3, (20, 30))
    for i in range(3):
        store.write(i, labels_of(i))
    nodes = [n for n in Reader(parse_url(str(path / "labels")))()
             if any(isinstance(s, Label) for s in n.specs)]
    assert [n.metadata["name"] for n in nodes] == ["instance", "semantic"]
    for node, mode in zip(nodes, ("instance", "semantic"), strict=True):
        assert [a["name"] for a in node.metadata["axes"]] == ["t", "y", "x"]
        data = np.asarray(node.data[0])
        assert data.dtype == np.uint32 and data.shape == (3, 20, 30)
        np.testing.assert_array_equal(data, np.stack([labels_of(i)[mode] for i in range(3)]))
    assert store.arrays["instance"].chunks == (1, 20, 30)


def test_each_target_writes_only_its_own_chunk(tmp_path):
    path = tmp_path / OME_ZARR_NAME
    store = OmeZarrLabels.create(path, ("instance",), 4, (8, 8))
    store.write(2, {"instance": np.ones((8, 8), np.uint8)})
    chunks = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()
                    and p.name != "zarr.json")
    assert chunks == ["labels/instance/0/c/2/0/0"]
    with pytest.raises(ValueError, match="different sizes"):
        store.write(1, {"instance": np.ones((8, 9), np.uint8)})
    with pytest.raises(FileExistsError):
        OmeZarrLabels.create(path, ("instance",), 4, (8, 8))


def result(index: int) -> TargetResult:
    labels = labels_of(index)
    scores = [ObjectScore(index, 1, "instance", 0.75, "query:3"),
              ObjectScore(index, 1, "semantic", 0.5, "class:1")]
    return TargetResult(index, labels, scores, (20, 30))


def test_result_writer_ome_zarr_layout_keeps_finished_targets(tmp_path):
    writer = result_writer.ResultWriter(tmp_path, ("instance", "semantic"), 3, layout="ome-zarr")
    writer.write(result(0))
    writer.write(result(1))
    kept = writer.finish()  # interrupted after 2 of 3
    assert sorted(p.name for p in kept) == [OME_ZARR_NAME, "scores.csv"]
    store = OmeZarrLabels.open(tmp_path / OME_ZARR_NAME)
    assert store.n_targets == 2 and store.modes == ("instance", "semantic")
    np.testing.assert_array_equal(store.read("instance", 1), labels_of(1)["instance"])
    assert (tmp_path / "scores.csv").read_text().splitlines()[1] == "0,1,instance,0.75,query:3"
    with pytest.raises(FileExistsError, match="--overwrite"):
        result_writer.ResultWriter(tmp_path, ("instance",), 1, layout="ome-zarr")


def write_ome_image(path, data, levels=3):
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(path), mode="w")
    write_image(data, root, axes="tczyx"[-data.ndim:], scale_factors=[2 ** k for k in range(1, levels)])


def test_multiscale_input_picks_the_level_and_drops_length_one_axes(tmp_path):
    data = np.arange(2 * 64 * 48, dtype=np.uint16).reshape(2, 1, 1, 64, 48)
    write_ome_image(tmp_path / "image.ome.zarr", data)
    full = open_image(tmp_path / "image.ome.zarr")
    assert full.shape == (2, 64, 48)
    np.testing.assert_array_equal(np.asarray(full), data[:, 0, 0])
    assert open_image(tmp_path / "image.ome.zarr", level=1).shape == (2, 32, 24)
    with pytest.raises(InputFileError, match=r"no level 7; its levels are 0: \(2, 1, 1, 64, 48\), 1: "):
        open_image(tmp_path / "image.ome.zarr", level=7)
    targets = FileTargets([tmp_path / "image.ome.zarr"], stack_axis=0, level=1)
    assert len(targets) == 2 and targets.read(1).shape == (32, 24)


def test_level_is_refused_for_single_level_inputs(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputFileError, match="--level 1 applies to OME-Zarr"):
        open_image(tmp_path / "a.tif", level=1)


def test_file_targets_span_files_travel_light_and_know_their_identity(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.arange(3 * 16, dtype=np.uint8).reshape(3, 4, 4))
    tifffile.imwrite(tmp_path / "b.tif", np.full((2, 4, 4), 7, np.uint8))
    targets = FileTargets([tmp_path / "a.tif", tmp_path / "b.tif"], stack_axis=0)
    assert len(targets) == 5
    np.testing.assert_array_equal(targets.read(4), np.full((4, 4), 7))
    targets.read(0)  # opened here: the opened arrays stay behind when pickled
    travelled = pickle.loads(pickle.dumps(targets))
    assert len(pickle.dumps(targets)) < 2000
    np.testing.assert_array_equal(travelled.read(2), targets.read(2))
    identity = targets.identity()
    assert identity["targets"] == 5 and identity["files"][0]["hashed"] == "sha256"
    tifffile.imwrite(tmp_path / "b.tif", np.full((2, 4, 4), 8, np.uint8))
    assert differences(identity, FileTargets([tmp_path / "a.tif", tmp_path / "b.tif"], 0).identity())


def test_records_are_atomic_and_join_into_scores_in_target_order(tmp_path):
    for index in (2, 0, 1):
        write_record(tmp_path, TargetRecord.from_result(index, result(index), ("instance",), "sha"))
    assert read_record(tmp_path, 1).labels_sha["instance"]
    record_path(tmp_path, 1).write_text('{"index": 1')  # torn
    assert read_record(tmp_path, 1) is None
    with pytest.raises(FileNotFoundError, match="target 1"):
        write_scores_table(tmp_path, range(3))
    assert not (tmp_path / "scores.csv").exists() and not list(tmp_path.glob(".scores.csv*"))
    write_record(tmp_path, TargetRecord.from_result(1, result(1), ("instance",), "sha"))
    rows = write_scores_table(tmp_path, range(3)).read_text().splitlines()
    assert rows == ["target,label,mode,score,source"] + [f"{i},1,instance,0.75,query:3" for i in range(3)]
