"""The GPU check of issue 22, in one go: parity with the CPU, autocast throughput, peak memory (run by hand).

Run by ``bench/gpu_check.sh`` on a CUDA machine (about 3–6 minutes); writes one markdown table.

1. **fp32 parity vs CPU**: the embedded model on the bundled sample (3 targets, all modes) on the CPU
   and on the device in fp32; per mode, the share of pixels with the same label and the object counts.
2. **Throughput**: the embedded model on 512² crops of the sample (``--targets``, batched), alone and
   with its default fitting recipe (what users get: a refiner on image features that runs on the CPU
   and answers instead of the model, so this row measures the machine's CPU), and SINE
   with the ViT-L encoder at P = 896 (installed ``sine-vitl`` weights, else random weights, said so in
   the table), in fp32, bf16 and fp16 autocast: targets per second after a warm-up target, and peak
   device memory (``torch.cuda.max_memory_allocated``).
3. ``--compile``: the same with the encoder wrapped in ``torch.compile`` (a failure is a table row).

``--dry-run`` runs every step on the CPU with tiny sizes (parity on one 224² crop, 1 target of 224² per
measurement, ViT-L replaced by ViT-S at P = 112, fp32 only) to check the script before a GPU is lent; its
numbers mean nothing.

Usage::

    python bench/gpu_check.py --device cuda --out "$OUT/gpu_check.md"
    python bench/gpu_check.py --dry-run --out /tmp/gpu_check.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_embedded import sample_crops  # noqa: E402  (bench/ is not a package)

MODES = ("id", "instance", "semantic")


def _propagator(model, device: str, precision: str, **options):
    from sine_model.engine.propagator import Propagator

    return Propagator(model, device=device, precision=precision, cache_bytes=0, **options)


def _sample_labels(model, device: str, side: int = 0) -> dict[str, list[np.ndarray]]:
    from sine_model.sample_data import load_sample

    sample = load_sample()
    window = (slice(None), slice(None)) if not side else (slice(0, side), slice(0, side))
    targets = sample.targets if not side else sample.targets[:1, :side, :side]
    prop = _propagator(model, device, "fp32")
    prop.set_references([(sample.reference[window], sample.reference_labels[window])])
    results = list(prop.propagate(targets, modes=MODES, stack_axis=0))
    return {mode: [r.labels[mode] for r in results] for mode in MODES}


def parity_rows(device: str, side: int = 0) -> list[str]:
    """Per mode: pixels with the same label on the CPU and on ``device`` (fp32), and object counts.

    ``side``: only the first target's top-left ``side``² (a dry run); 0: the three whole targets.
    """
    from sine_model import from_pretrained

    cpu = _sample_labels(from_pretrained("sine-embedded"), "cpu", side)
    dev = _sample_labels(from_pretrained("sine-embedded"), device, side)
    rows = []
    for mode in MODES:
        same = np.mean([np.mean(a == b) for a, b in zip(cpu[mode], dev[mode], strict=True)])
        count = [len(np.unique(a)) - 1 for a in cpu[mode]], [len(np.unique(b)) - 1 for b in dev[mode]]
        rows.append(f"| parity fp32 {device} vs cpu | embedded | {mode} | {same:.5f} of pixels equal | "
                    f"objects cpu {count[0]} / {device} {count[1]} | |")
    return rows


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> str:
    import torch

    if not device.startswith("cuda"):
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def throughput_row(name: str, model, device: str, precision: str, images, ref, ref_labels,
                   compile_encoder: bool = False, recipe: bool = False, **options) -> str:
    """One table row: targets per second (after one warm-up target) and peak device memory.

    ``recipe``: prepare the propagator with the preset's fitting recipe first, as users get it (for
    sine-embedded a refiner on image features, which runs on the CPU); its fitting time is in the note.
    """
    import torch

    from sine_model.fitting.preparation import ReferencePreparation

    fitted = ""
    try:
        prop = _propagator(model, device, precision, **options)
        if compile_encoder:
            prop.model.image_encoder.encoder = torch.compile(prop.model.image_encoder.encoder)
        if recipe:
            start = time.perf_counter()
            ReferencePreparation(prop, [(ref, ref_labels)]).run()
            fitted = f", recipe fitted in {time.perf_counter() - start:.1f} s"
        else:
            prop.set_references([(ref, ref_labels)])
        list(prop.propagate(images[:1], modes=MODES, stack_axis=0))  # warm-up (and compilation)
        _peak_reset(device)
        start = time.perf_counter()
        count = sum(1 for _ in prop.propagate(images, modes=MODES, stack_axis=0))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    except Exception as error:  # a failed configuration is a result, not the end of the check
        return f"| throughput | {name} | {precision}{' compiled' if compile_encoder else ''} | failed: " \
               f"{type(error).__name__}: {str(error)[:120]} | | |"
    finally:
        if compile_encoder:
            torch._dynamo.reset()
    return (f"| throughput | {name} | {precision}{' compiled' if compile_encoder else ''} | "
            f"{count / seconds:.2f} targets/s ({seconds / count:.3f} s/target, {count} targets, batch "
            f"{prop.batch_size}) | peak {_peak_gib(device)} | P = {prop.pad}{fitted} |")


def vitl_model(dry_run: bool):
    """The official model (installed weights) or ViT-L with random weights; ViT-S in a dry run."""
    from sine_model import build_sine, from_pretrained, get_preset, installed_weights

    if dry_run:
        return build_sine("vits"), "vits random weights (dry run)"
    if installed_weights(get_preset("sine-vitl")) is not None:
        return from_pretrained("sine-vitl"), "sine-vitl"
    print("sine-vitl weights are not installed: timing ViT-L with random weights (same cost, proposals "
          "meaningless)", flush=True)
    return build_sine("vitl"), "vitl random weights (sine-vitl not installed)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--targets", type=int, default=32, help="embedded-model targets per measurement")
    parser.add_argument("--vitl-targets", type=int, default=16)
    parser.add_argument("--vitl-batch", type=int, default=8, help="tiles per model call for ViT-L")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd encoders")
    parser.add_argument("--dry-run", action="store_true", help="CPU smoke run of every step, tiny sizes")
    parser.add_argument("--out", default="gpu_check.md")
    args = parser.parse_args()

    import torch

    from sine_model import from_pretrained

    device = "cpu" if args.dry_run else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here: run with --dry-run for a CPU smoke run", file=sys.stderr)
        return 2
    targets = 1 if args.dry_run else args.targets
    precisions = ("fp32",) if device == "cpu" else ("fp32", "bf16", "fp16")
    begin = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    lines = [f"GPU check ({'dry run, ' if args.dry_run else ''}{name}, torch {torch.__version__})", "",
             "| check | model | setting | result | memory | note |", "|---|---|---|---|---|---|"]

    def emit(row: str) -> None:
        lines.append(row)
        print(row, flush=True)

    for row in parity_rows(device, 224 if args.dry_run else 0):
        emit(row)
    ref, ref_labels, images, _ = sample_crops(targets, 224 if args.dry_run else 512)
    stack = np.stack(images)
    embedded = from_pretrained("sine-embedded")
    for precision in precisions:
        emit(throughput_row("embedded", embedded, device, precision, stack, ref, ref_labels))
    # what users get by default: the preset's recipe, whose refiner (on the CPU) answers instead of the model
    emit(throughput_row("embedded + default recipe", embedded, device, "fp32", stack, ref, ref_labels,
                        recipe=True))
    if args.compile:
        emit(throughput_row("embedded", embedded, device, precisions[-1], stack, ref, ref_labels, True))
    model, label = vitl_model(args.dry_run)
    pad = 112 if args.dry_run else 896
    vitl_count = 1 if args.dry_run else args.vitl_targets
    # 896² crops: the sample images tiled to the model input (one tile per target at P = 896)
    big = np.stack([np.pad(img, ((0, pad - img.shape[0]), (0, pad - img.shape[1])), mode="reflect")
                    if pad > img.shape[0] else img[:pad, :pad] for img in images[:vitl_count]])
    for precision in precisions:
        emit(throughput_row(label, model, device, precision, big, ref, ref_labels, pad=pad,
                            batch_size=args.vitl_batch))
    if args.compile:
        emit(throughput_row(label, model, device, precisions[-1], big, ref, ref_labels, True, pad=pad,
                            batch_size=args.vitl_batch))
    lines += ["", f"Whole check: {time.perf_counter() - begin:.0f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({time.perf_counter() - begin:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
