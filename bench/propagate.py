"""Benchmark the propagation engine against a naive per-target loop (run by hand).

For each encoder and target count, a fresh subprocess builds the model (random weights), sets one
reference (a 2D image with 8 labelled objects) and propagates N targets of a fixed size, all three
modes. The *naive* loop runs the official-style full forward per target (``forward_raw``: the reference
is re-encoded every time, auxiliary predictions included) and the same post-processing. Each run
reports seconds per target (excluding model build and the first target's warm-up when N > 1) and the
process's peak RSS.

Usage::

    python bench/propagate.py --encoders vits vitl --counts 1 10 100 --naive-counts 1 10 --pad 448
    python bench/propagate.py --write docs/benchmarks.md   # also replace that file's section

Targets (issue 3): engine ≥ 1.9× faster than naive at 10 targets with vitl; peak RSS at 100 targets
within 10 % of that at 10 targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

SECTION = "## Propagation engine vs naive loop"


def _scene(rng, size):
    import numpy as np

    image = rng.integers(0, 255, (size, size), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint16)
    step = size // 4
    for k in range(8):
        y, x = (k // 4) * 2 * step + step // 2, (k % 4) * step + step // 4
        labels[y : y + step // 2, x : x + step // 2] = k + 1
    return image, labels


def run_one(encoder: str, count: int, pad: int, naive: bool, cache_mb: int, device: str = "cpu",
            precision: str = "fp32", batch_size: int = 1) -> dict:
    """Run in the current process and return timings (called in a subprocess)."""
    import numpy as np
    import torch

    from sine_model import build_sine
    from sine_model.engine.propagator import Propagator
    from sine_model.engine.stitching import TileOutput, stitch_id, stitch_instances, stitch_semantic
    from sine_model.engine.tiling import plan_tiles
    from sine_model.modeling.context import ReferenceTokens
    from sine_model.preprocess.transforms import Geometry, prepare_labels, rgb_to_model_input, to_rgb_float

    torch.manual_seed(0)
    model = build_sine(encoder).eval()
    rng = np.random.default_rng(0)
    ref_image, ref_labels = _scene(rng, pad)
    targets = (rng.integers(0, 255, (pad, pad), dtype=np.uint8) for _ in range(count))
    modes = ("id", "instance", "semantic")
    thresholds = {"id": 0.5, "instance": 0.5, "semantic": 0.7}
    times = []
    if naive:
        geometry = Geometry(pad, (pad, pad), (pad, pad))
        masks, ids = prepare_labels(ref_labels, geometry)
        ref = rgb_to_model_input(to_rgb_float(ref_image), (pad, pad), pad)
        tile = plan_tiles(pad, pad, pad, 0)[0]
        for target in targets:
            start = time.perf_counter()
            with torch.inference_mode():
                raw = model.forward_raw(ref, [masks], [torch.ones_like(ids)], [ids],
                                        rgb_to_model_input(to_rgb_float(target), (pad, pad), pad))
                # ids and labels come back in the raw output; the post-processing needs nothing else
                tok = ReferenceTokens(torch.empty(0), torch.empty(0), raw["ref_ids"][0],
                                      raw["ref_id_labels"][0], raw["ref_sem_labels"][0])
                out = [TileOutput.from_raw(raw, 0, tile, geometry, tok, modes, thresholds)]
                stitch_id((pad, pad), out, 0.5)
                stitch_instances((pad, pad), out, 0.5)
                stitch_semantic((pad, pad), out, tok.sem_labels.tolist(), 0.7)
            times.append(time.perf_counter() - start)
    else:
        propagator = Propagator(model, device=device, precision=precision, pad=pad,
                                cache_bytes=cache_mb << 20, batch_size=batch_size)
        start_refs = time.perf_counter()
        propagator.set_references([(ref_image, ref_labels)])
        ref_seconds = time.perf_counter() - start_refs
        start = time.perf_counter()
        for _ in propagator.propagate(targets, modes=modes):
            now = time.perf_counter()
            times.append(now - start)
            start = now
    warm = batch_size if not naive and len(times) > batch_size else (1 if len(times) > 1 else 0)
    steady = times[warm:]
    result = {
        "encoder": encoder, "count": count, "pad": pad, "naive": naive,
        "seconds_per_target": sum(steady) / len(steady), "first_target_seconds": times[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(), "cache_mb": None if naive else cache_mb,
        "device": device, "precision": precision, "batch_size": batch_size,
        "targets_per_second": len(steady) / sum(steady),
    }
    if not naive:
        result["reference_seconds"] = ref_seconds
    return result


def _child(args: argparse.Namespace, encoder: str, count: int, naive: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", encoder, str(count), str(args.pad), str(int(naive)),
           str(args.cache_mb), args.device, args.precision, str(args.batch_size)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    lines = ["| encoder | P | device | targets | method | s / target | targets / s | first target s "
             "| peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        method = "naive loop" if r["naive"] else f"engine (batch {r['batch_size']}, cache {r['cache_mb']} MB)"
        lines.append(f"| {r['encoder']} | {r['pad']} | {r['device']} {r['precision']} | {r['count']} | "
                     f"{method} | {r['seconds_per_target']:.3f} | {r['targets_per_second']:.2f} | "
                     f"{r['first_target_seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def _summary(rows: list[dict]) -> list[str]:
    out = []
    for enc in sorted({r["encoder"] for r in rows}):
        get = {(r["count"], r["naive"]): r for r in rows if r["encoder"] == enc}
        if (10, True) in get and (10, False) in get:
            ratio = get[(10, True)]["seconds_per_target"] / get[(10, False)]["seconds_per_target"]
            out.append(f"- {enc}: engine is {ratio:.2f}× faster than the naive loop at 10 targets "
                       "(target ≥ 1.9× for vitl)")
        if (100, False) in get and (10, False) in get:
            growth = get[(100, False)]["peak_rss_mb"] / get[(10, False)]["peak_rss_mb"] - 1
            out.append(f"- {enc}: peak RSS at 100 targets is {100 * growth:+.1f} % vs 10 targets "
                       "(target within 10 %)")
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        encoder, count, pad, naive, cache_mb, device, precision, batch = sys.argv[2:10]
        print(json.dumps(run_one(encoder, int(count), int(pad), bool(int(naive)), int(cache_mb), device,
                                 precision, int(batch))))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", default=["vits", "vitl"])
    parser.add_argument("--counts", nargs="+", type=int, default=[1, 10, 100])
    parser.add_argument("--naive-counts", nargs="*", type=int, default=[1, 10])
    parser.add_argument("--pad", type=int, default=448, help="model input side P (targets are P×P)")
    parser.add_argument("--cache-mb", type=int, default=1024, help="engine feature-cache budget")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=1, help="engine tiles per model call")
    parser.add_argument("--write", type=Path, help="replace this benchmark's section in a markdown file")
    args = parser.parse_args()
    rows = []
    for encoder in args.encoders:
        for naive, counts in ((True, args.naive_counts), (False, args.counts)):
            for count in counts:
                row = _child(args, encoder, count, naive)
                print(json.dumps(row), flush=True)
                rows.append(row)
    import torch

    text = "\n".join([
        SECTION, "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python bench/propagate.py {' '.join(sys.argv[1:])}` on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}, random weights, one 8-object reference, P×P uint8 targets, modes "
        "id+instance+semantic. s / target excludes the first target (warm-up) when there are several; "
        "each row is a fresh process.", "",
        _table(rows), "", *_summary(rows), "",
    ])
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
        new = pattern.sub(text, old) if pattern.search(old) else old.rstrip() + "\n\n" + text
        args.write.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
