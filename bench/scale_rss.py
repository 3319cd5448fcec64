"""Peak memory of a distributed run's client and workers as the number of targets grows (should stay flat).

    python bench/scale_rss.py --counts 100 1000 10000 --workers 2 --write    # the issue's full range

Each count runs in a fresh process: a LocalCluster of ``--workers`` worker processes (one thread each)
runs ``propagate_distributed`` on a zarr stack of 64×64 targets (embedded model, P = 112), writing
OME-Zarr; then the client's and every worker's peak RSS (``ru_maxrss``) are read. ``--write`` puts the
table into docs/benchmarks.md (scale-out section).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_common import PAD, peak_rss_mb, prepared_propagator, replace_block, write_target_stack  # noqa: E402


def _worker_peak_mb(field: str = "VmHWM") -> float:
    """Peak RSS (VmHWM; or current, VmRSS) of the calling process, read where it runs: on a worker."""
    import os

    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        line = next(row for row in status if row.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def _progress(client, count: int, every: int, start: float):
    """An ``on_target`` that prints, every ``every`` targets, the workers' current and peak RSS to stderr
    (so that a long row that is stopped still says how far it got)."""
    finished = [0]

    def on_target(_index: int) -> None:
        finished[0] += 1
        if finished[0] % every == 0 or finished[0] == count:
            now = sorted(client.run(_worker_peak_mb, "VmRSS").values())
            peak = sorted(client.run(_worker_peak_mb).values())
            print(f"[{count}] {finished[0]} targets, {time.perf_counter() - start:.0f} s: worker RSS MB "
                  f"{', '.join(f'{mb:.0f}' for mb in now)} (peak {', '.join(f'{mb:.0f}' for mb in peak)}), "
                  f"client peak {peak_rss_mb():.0f}", file=sys.stderr, flush=True)

    return on_target


def child(count: int, workers: int, every: int) -> dict:
    import distributed

    from sine_model import FileTargets, propagate_distributed

    with tempfile.TemporaryDirectory() as folder:
        stack = write_target_stack(Path(folder) / "targets.zarr", count)
        propagator = prepared_propagator()
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
        start_cpu = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        targets = FileTargets([stack], stack_axis=0)
        summary = propagate_distributed(propagator, targets, Path(folder) / "out", scheduler=client,
                                        on_target=_progress(client, count, every, start))
        seconds = time.perf_counter() - start
        end_cpu = resource.getrusage(resource.RUSAGE_SELF)
        worker_mb = sorted(client.run(_worker_peak_mb).values())
        client.close()
        cluster.close()
        store = Path(folder) / "out" / "labels.ome.zarr"
        store_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    cpu = (end_cpu.ru_utime + end_cpu.ru_stime) - (start_cpu.ru_utime + start_cpu.ru_stime)
    return {"targets": count, "workers": workers, "complete": summary.complete, "seconds": seconds,
            "client_mb": peak_rss_mb(), "worker_mb": worker_mb,
            "client_cpu_ms_per_target": 1000 * cpu / count, "store_bytes_per_target": store_bytes / count}


def table(rows: list[dict], command: str, unfinished: list[int] | None = None) -> str:
    lines = [
        "### Peak memory vs number of targets",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}` "
        f"({platform.machine()}, Python {platform.python_version()}; embedded model, P = {PAD}, 64×64 "
        "uint8 targets in a zarr stack, one chunk per target; LocalCluster, one thread per worker; each "
        "row a fresh process).",
        "",
        "| targets | workers | complete | wall s | client peak RSS MB | worker peak RSS MB "
        "| client CPU ms / target | store bytes / target |",
        "|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        workers = ", ".join(f"{mb:.0f}" for mb in r["worker_mb"])
        lines.append(f"| {r['targets']:,} | {r['workers']} | {r['complete']} | {r['seconds']:.1f} | "
                     f"{r['client_mb']:.0f} | {workers} | {r['client_cpu_ms_per_target']:.1f} | "
                     f"{r['store_bytes_per_target']:.0f} |")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        client = 100 * (last["client_mb"] / first["client_mb"] - 1)
        worker = 100 * (max(last["worker_mb"]) / max(first["worker_mb"]) - 1)
        lines += ["", f"- {last['targets']:,} vs {first['targets']:,} targets: client peak RSS "
                  f"{client:+.1f} %, largest worker peak RSS {worker:+.1f} % (target: within +10 %)."]
    if unfinished:
        lines += ["", "- Not measured (the command was still running or was stopped when this was written): "
                  + ", ".join(f"{count:,}" for count in unfinished) + " targets."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--progress-every", type=int, default=1000,
                        help="print the workers' RSS to stderr every this many targets")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.workers, args.progress_every)))
        return 0
    command = "python bench/scale_rss.py --counts " + " ".join(map(str, args.counts)) + \
        f" --workers {args.workers}" + (" --write" if args.write else "")
    rows: list[dict] = []
    for position, count in enumerate(args.counts):
        argv = [sys.executable, __file__, "--child", str(count), "--workers", str(args.workers),
                "--progress-every", str(args.progress_every)]
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True)  # stderr: progress
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
        if args.write and position + 1 < len(args.counts):  # a long last row may be stopped: keep these
            replace_block("scale_rss", table(rows, command, args.counts[position + 1 :]))
    text = table(rows, command)
    print(text)
    if args.write:
        replace_block("scale_rss", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
