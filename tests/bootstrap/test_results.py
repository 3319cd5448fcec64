"""Reading a propagate results folder back, in every layout ResultWriter writes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from sine_model.bootstrap.results import ScoreRow, read_results
from sine_model.errors import InputFileError
from sine_model.io.result_writer import ResultWriter


def fake_results(n=3, shape=(12, 16)):
    rng = np.random.default_rng(0)
    out = []
    for index in range(n):
        labels = {m: rng.integers(0, 4, shape).astype(np.uint16) for m in ("instance", "semantic")}
        scores = [ScoreRow(index, 1, "instance", 0.5 + index / 10, "class:1"),
                  ScoreRow(index, 1, "semantic", 0.7, "class:1")]
        out.append(type("R", (), {"index": index, "labels": labels, "scores": scores})())
    return out


@pytest.mark.parametrize("layout", ["tiff", "zarr", "files", "ome-zarr"])
def test_every_layout_reads_back(tmp_path, layout):
    pytest.importorskip("ome_zarr")
    results = fake_results()
    writer = ResultWriter(tmp_path, ("instance", "semantic"), len(results), layout=layout)
    for result in results:
        writer.write(result)
    writer.finish()
    folder = read_results(tmp_path)
    assert folder.modes == ("instance", "semantic") and folder.n_targets == 3
    for result in results:
        back = folder.labels(result.index)
        for mode in folder.modes:
            assert np.array_equal(back[mode], result.labels[mode])
        assert folder.scores(result.index) == [
            ScoreRow(r.target, r.label, r.mode, pytest.approx(r.score), r.source) for r in result.scores]
    with pytest.raises(IndexError, match="targets 0..2"):
        folder.labels(3)


def test_not_a_results_folder_says_so(tmp_path):
    with pytest.raises(InputFileError, match="--out folder"):
        read_results(tmp_path)
    with pytest.raises(InputFileError, match="not a folder"):
        read_results(tmp_path / "missing")
    tifffile.imwrite(tmp_path / "labels_instance.tif", np.zeros((2, 6, 7), np.uint32))
    (tmp_path / "scores.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputFileError, match="napari-sine scores.csv"):
        read_results(tmp_path)
    (tmp_path / "scores.csv").write_text("target,label,mode,score,source\n0,1,instance,high,\n")
    with pytest.raises(InputFileError, match="line 2"):
        read_results(tmp_path)
