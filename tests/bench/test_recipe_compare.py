"""bench/recipe_compare.py: the table compares methods on the pairs they all finished, files merged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from recipe_compare import table  # noqa: E402


def record(method, dataset, reference, target, f1, fit_s=10.0, predict_s=1.0):
    return dict(kind="pair", method=method, dataset=dataset, group="g", reference=reference, target=target,
                f1=f1, fit_s=fit_s, predict_s=predict_s)


def test_table_keeps_common_pairs_merges_files_and_reports_the_spread(tmp_path):
    a = [record("a", "dsb2018", "r1", "t1", 0.8), record("a", "dsb2018", "r1", "t2", 0.6),
         record("a", "dsb2018", "r2", "t3", 0.2, fit_s=30.0), record("a", "epfl", "r3", "t4", 0.5)]
    b_first = [record("b", "dsb2018", "r1", "t1", 1.0), record("b", "dsb2018", "r1", "t2", 1.0)]
    b_second = [record("b", "dsb2018", "r2", "t3", 0.0)]  # r3 never finished by b: left out for both
    paths = []
    for name, records in (("a", a), ("b1", b_first), ("b2", b_second)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(records))
    text = table(paths)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| a") or
            line.startswith("| b")}
    assert set(rows) == {"a", "b"} and "3 pairs common to all methods" in text
    # a: mean of 0.8, 0.6, 0.2 over 3 pairs; references r1 (0.7) and r2 (0.2); epfl not common
    assert "0.533 (0.20–0.70, 3)" in rows["a"] and "—" in rows["a"]
    assert "0.667 (0.00–1.00, 3)" in rows["b"]
    assert "| 20 (10–30) |" in rows["a"]  # median fit over references: 10 and 30
