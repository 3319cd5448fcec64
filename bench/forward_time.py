"""Forward time of SINE on the CPU in fp32, with random weights.

For each encoder, builds ``build_sine(encoder)``, puts it in eval mode and times
``model.forward_raw`` under ``torch.inference_mode()`` on one reference image (with a few random
masks) and one target, both P x P (default P = 896). One warm-up forward, then ``--repeats`` timed
ones; reports the median and minimum wall-clock time per forward.

If the model has ``encode_images(x)``, the time spent inside it is reported separately
("encoder"), and the remainder of the forward as "rest" (pooling, fusion, M-Former and heads). The
encoder time is taken from inside the timed forward when ``forward_raw`` calls
``self.encode_images``; otherwise ``encode_images`` is timed on its own on the same (reference +
target) images, and "rest" is the forward's median minus that.

The results are printed and written as the section "## Forward time (CPU, fp32)" of
``docs/benchmarks.md`` (replacing an earlier version of that section, keeping the rest of the file).

    python bench/forward_time.py                        # vits and vitl, P = 896, 3 repeats
    python bench/forward_time.py --encoder vits --repeats 5 --threads 2
    python bench/forward_time.py --encoder vits --size 224 --output -   # quick check, no file
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Forward time (CPU, fp32)"
ENCODERS = ("vits", "vitb", "vitl")
PATCH = 14


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time SINE's forward pass on the CPU (fp32, random weights).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--encoder",
        nargs="+",
        choices=ENCODERS,
        default=["vits", "vitl"],
        help="encoders to time, in this order",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed forwards per encoder (after 1 warm-up)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads(N); None keeps torch's default",
    )
    parser.add_argument(
        "--size", type=int, default=896, help="square input size P, a multiple of 14"
    )
    parser.add_argument("--masks", type=int, default=3, help="random masks on the reference")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="markdown file whose section is written; '-' prints only",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.size < PATCH or args.size % PATCH:
        parser.error(f"--size must be a positive multiple of {PATCH}")
    if args.masks < 1:
        parser.error("--masks must be at least 1")
    return args


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def make_inputs(torch, size: int, n_masks: int, seed: int) -> dict:
    """One reference with ``n_masks`` random rectangles (distinct ids, two labels), one target."""
    gen = torch.Generator().manual_seed(seed)
    ref_images = torch.randn(1, 3, size, size, generator=gen)
    target = torch.randn(1, 3, size, size, generator=gen)
    masks = torch.zeros(n_masks, size, size, dtype=torch.bool)
    for i in range(n_masks):
        h, w = (int(v) for v in torch.randint(size // 8, size // 3, (2,), generator=gen))
        y = int(torch.randint(0, size - h, (1,), generator=gen))
        x = int(torch.randint(0, size - w, (1,), generator=gen))
        masks[i, y : y + h, x : x + w] = True
    labels = torch.tensor([1 + i % 2 for i in range(n_masks)], dtype=torch.int64)
    ids = torch.arange(1, n_masks + 1, dtype=torch.int64)
    return {
        "ref_images": ref_images,
        "ref_masks": [masks],
        "ref_labels": [labels],
        "ref_ids": [ids],
        "target": target,
    }


@dataclass
class Result:
    encoder: str
    params: int
    build_s: float
    forward_s: list[float]
    encoder_s: list[float] = field(default_factory=list)
    encoder_mode: str = "none"  # "inside" | "separate" | "none"


class _EncodeTimer:
    """Wraps ``model.encode_images`` on the instance and adds up the time spent in it."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def reset(self) -> None:
        self.seconds = 0.0
        self.calls = 0


def bench_encoder(torch, build_sine, name: str, args: argparse.Namespace) -> Result:
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = build_sine(name).eval()
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    inputs = make_inputs(torch, args.size, args.masks, args.seed)
    print(f"[{name}] built in {build_s:.1f}s, {params:,} parameters", flush=True)

    encode = getattr(model, "encode_images", None)
    timer = _EncodeTimer(encode) if callable(encode) else None
    if timer is not None:
        # An instance attribute shadows the method, so a forward that calls self.encode_images
        # goes through the timer.
        object.__setattr__(model, "encode_images", timer)

    result = Result(encoder=name, params=params, build_s=build_s, forward_s=[])
    try:
        with torch.inference_mode():
            for i in range(args.repeats + 1):
                if timer is not None:
                    timer.reset()
                start = time.perf_counter()
                model.forward_raw(**inputs)
                took = time.perf_counter() - start
                label = "warm-up" if i == 0 else f"run {i}/{args.repeats}"
                print(f"[{name}] {label}: {took:.2f}s", flush=True)
                if i == 0:
                    continue
                result.forward_s.append(took)
                if timer is not None and timer.calls:
                    result.encoder_s.append(timer.seconds)
            if timer is not None and timer.calls:
                result.encoder_mode = "inside"
            elif timer is not None:
                # forward_raw does not route through encode_images: time it on its own.
                result.encoder_mode = "separate"
                images = torch.cat([inputs["ref_images"], inputs["target"]])
                for i in range(args.repeats + 1):
                    start = time.perf_counter()
                    encode(images)
                    took = time.perf_counter() - start
                    print(f"[{name}] encode_images {'warm-up' if i == 0 else i}: {took:.2f}s")
                    if i:
                        result.encoder_s.append(took)
    finally:
        if timer is not None:
            object.__delattr__(model, "encode_images")
    return result


def _fmt(values: list[float], how: Callable[[list[float]], float]) -> str:
    return f"{how(values):.2f}" if values else "n/a"


def render_section(results: list[Result], args: argparse.Namespace, torch, argv: list[str]) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/forward_time.py" + "".join(" " + shlex.quote(a) for a in argv)
    g = args.size // PATCH
    lines = [
        SECTION_TITLE,
        "",
        f"Measured {now} with `{command}`.",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.machine()}.",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads"
        + (" (set with --threads)." if args.threads else " (torch's default)."),
        f"- Setup: random weights, fp32, `model.eval()`, `torch.inference_mode()`; P = {args.size} "
        f"(g = {g}); one reference with {args.masks} random rectangular masks (distinct ids, "
        f"labels alternating 1/2) and one target. One warm-up forward, then {args.repeats} timed "
        "`forward_raw` calls; wall-clock seconds per call.",
        "- encoder: time inside `model.encode_images` (reference + target images); rest: forward "
        "minus encoder (mask pooling, fusion, M-Former, heads).",
        "",
        "| encoder | parameters | build (s) | forward median (s) | forward min (s) "
        "| encoder median (s) | rest median (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in results:
        fwd_median = statistics.median(r.forward_s)
        enc = _fmt(r.encoder_s, statistics.median)
        if r.encoder_mode == "inside":
            rest_s = statistics.median(f - e for f, e in zip(r.forward_s, r.encoder_s, strict=True))
            rest = f"{rest_s:.2f}"
        elif r.encoder_s:
            rest = f"{fwd_median - statistics.median(r.encoder_s):.2f}"
        else:
            rest = "n/a"
        if r.encoder_mode == "separate":
            notes.append(
                f"- {r.encoder}: `forward_raw` does not call `encode_images`; the encoder was "
                "timed in separate calls on the same images (rest = forward median - that median)."
            )
        elif r.encoder_mode == "none":
            notes.append(f"- {r.encoder}: the model has no `encode_images`; total time only.")
        lines.append(
            f"| {r.encoder} | {r.params:,} | {r.build_s:.1f} | {fwd_median:.2f} "
            f"| {_fmt(r.forward_s, min)} | {enc} | {rest} |"
        )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section with the same title (up to the next ``## `` heading) or append it."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
    else:
        lines = ["# Benchmarks\n", "\n"]
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION_TITLE), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("\n")
        lines.append(section)
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = lines[end:]
        lines[start:end] = [section] + (["\n"] if tail else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)

    import torch

    try:
        from sine_model import build_sine
    except ImportError:  # not installed: use the checkout this script lives in
        sys.path.insert(0, str(REPO_ROOT))
        from sine_model import build_sine

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()}, "
        f"P = {args.size}",
        flush=True,
    )
    results = [bench_encoder(torch, build_sine, name, args) for name in args.encoder]
    section = render_section(results, args, torch, argv)
    print()
    print(section)
    if args.output != "-":
        write_section(Path(args.output), section)
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
