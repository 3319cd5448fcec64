"""Throughput of a distributed run with 1 and 2 worker processes on this machine, as a ratio.

    python bench/scale_throughput.py --targets 200 --write

Each row is a fresh process: a LocalCluster of N worker processes (one thread each; torch one thread)
runs ``propagate_distributed`` on a zarr stack of 64×64 targets (embedded model, P = 112). Throughput is
counted between the first and the last finished target, so the cluster's start and the model's loading
are not in it. Also a row for the same run in one process (no cluster, one torch thread). ``--write``
puts the table into docs/benchmarks.md (scale-out section). Wall-clock numbers: run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_common import PAD, prepared_propagator, replace_block, write_target_stack  # noqa: E402


def child(count: int, workers: int) -> dict:
    from sine_model import FileTargets, propagate_distributed

    with tempfile.TemporaryDirectory() as folder:
        stack = write_target_stack(Path(folder) / "targets.zarr", count)
        propagator = prepared_propagator()
        times: list[float] = []
        client = cluster = None
        if workers:
            import distributed

            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None)
            client = distributed.Client(cluster)
        targets = FileTargets([stack], stack_axis=0)
        summary = propagate_distributed(propagator, targets, Path(folder) / "out", scheduler=client,
                                        on_target=lambda _: times.append(time.perf_counter()))
        if client is not None:
            client.close()
            cluster.close()
    rate = (len(times) - 1) / (times[-1] - times[0])
    return {"targets": count, "workers": workers, "complete": summary.complete, "targets_per_s": rate,
            "load": os.getloadavg()[0]}


def table(rows: list[dict], command: str) -> str:
    lines = [
        "### Throughput: 1 vs 2 worker processes",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}` "
        f"({platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}; "
        f"embedded model, P = {PAD}, 64×64 targets; targets / s between the first and the last finished "
        "target).",
        "",
        "| run | targets | targets / s | load average (1 min) at the end |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        name = "one process, no cluster" if r["workers"] == 0 else f"LocalCluster, {r['workers']} worker(s)"
        load = r.get("load", float("nan"))
        lines.append(f"| {name} | {r['targets']} | {r['targets_per_s']:.2f} | {load:.1f} |")
    by_workers = {r["workers"]: r["targets_per_s"] for r in rows}
    if 1 in by_workers and 2 in by_workers:
        lines += ["", f"- 2 vs 1 worker processes: {by_workers[2] / by_workers[1]:.2f}× the throughput."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    rows = []
    for workers in args.workers:
        argv = [sys.executable, __file__, "--child", str(args.targets), str(workers)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    command = f"python bench/scale_throughput.py --targets {args.targets} --workers " + \
        " ".join(map(str, args.workers)) + (" --write" if args.write else "")
    text = table(rows, command)
    print(text)
    if args.write:
        replace_block("scale_throughput", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
