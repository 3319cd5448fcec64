"""Profile the default (embedded) model on 512×512 crops of the bundled sample (issue 22; run by hand).

One process: ``Propagator(from_pretrained("sine-embedded"))``, reference = the top-left 512² crop of the
sample's reference, targets = 512² crops of the three sample targets at several offsets, all three modes
(or ``--modes``). Three runs on fresh propagators (nothing cached between them):

1. a warm-up run of one target (not counted);
2. the timed run of ``--targets`` targets: seconds per target = the run's total / N, in CPU time of the
   process (``time.process_time``, all threads; less sensitive to other jobs on the machine) and wall
   time, plus the median of the per-target intervals of targets 2..N (meaningful when targets are not
   batched);
3. a cProfile run (timer: process CPU time) of the same targets, one at a time (cProfile sees one
   thread; the timed run answers targets the refiner alone answers several at once, one per thread),
   reported per stage and per target:
   encoder (filter bank included), filter bank (the model's and the refiner's), encode + neck (the
   cached encoder call: encoder, cache and neck), M-Former, post-processing (per tile: ID masks,
   semantic maps), stitching (tiles → label maps, instances from the class map, the refiner), the
   refiner's stages (features, MLP + forest, the forest alone, instances), ID by matching, and the
   whole run.

``--recipe`` prepares each propagator with the preset's fitting recipe first (for sine-embedded the
refiner: an MLP and a random forest on image features), as the CLI, the demo and the widget do; the
fitting itself is not timed. Without it the model's own answers are timed.

The 1-minute load average (``os.getloadavg``) is printed before and after every number: this machine is
shared, so compare numbers taken under similar load, and prefer ``--threads 1`` (CPU time then ≈ work).
With ``--compete`` a busy-loop process runs beside the measurement (a competing job on one core).

Also prints the instance F1 (IoU ≥ 0.5) and semantic foreground IoU of the proposals against the crops'
ground truth, so a speed change that changes outputs can be judged on quality.

Usage::

    python bench/profile_embedded.py --threads 1
    python bench/profile_embedded.py --threads 2 --targets 10 --compete
    python bench/profile_embedded.py --threads 1 --set pad=448   # any Propagator keyword, as key=value
    python bench/profile_embedded.py --threads 2 --recipe --no-profile   # what users run
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import os
import pstats
import subprocess
import sys
import time

import numpy as np

CROP = 512
#: Stage name → (file name suffix, function name, its class or "") whose cumulative time is the stage's.
STAGES = {
    "encoder": ("modeling/embedded.py", "forward", "FilterBankEncoder"),
    "filter bank": ("modeling/filter_bank.py", "forward", "FilterBank"),
    "encode + neck": ("engine/cached_encoder.py", "encode", "CachedEncoder"),
    "M-Former": ("modeling/mformer.py", "forward", "MFormer"),
    "post-processing": ("engine/stitching.py", "from_raw", "TileOutput"),
    "stitching": ("engine/stitching.py", "assemble_target", ""),
    "refiner": ("postprocess/pixel_refiner.py", "refine", "PixelRefiner"),
    "refiner features": ("postprocess/pixel_refiner.py", "strips", "PixelRefiner"),
    "refiner MLP + forest": ("postprocess/pixel_refiner.py", "probabilities", "PixelRefiner"),
    "refiner forest": ("postprocess/pixel_refiner.py", "_forest_probabilities", ""),
    "refiner instances": ("postprocess/border_instances.py", "instances", "RefinedMaps"),
    "ID by matching": ("engine/id_answers.py", "_ids_by_matching", "IdAnswers"),
}


def sample_crops(count: int, crop: int = CROP
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Reference crop, its labels, and ``count`` target crops with their labels (offsets cycle).

    ``crop=0``: the whole images (520×696).
    """
    from sine_model.sample_data import load_sample

    sample = load_sample()
    height, width = sample.reference.shape
    if crop == 0:
        picks = [k % len(sample.targets) for k in range(count)]
        return (sample.reference, sample.reference_labels, [sample.targets[k] for k in picks],
                [sample.target_labels[k] for k in picks])
    offsets = [(y, x) for x in (0, (width - CROP) // 2, width - CROP) for y in (0, height - CROP)]
    ref = sample.reference[:CROP, :CROP]
    ref_labels = sample.reference_labels[:CROP, :CROP]
    images, labels = [], []
    for k in range(count):
        t = k % len(sample.targets)
        y, x = offsets[(k // len(sample.targets)) % len(offsets)]
        images.append(sample.targets[t, y : y + CROP, x : x + CROP])
        labels.append(sample.target_labels[t, y : y + CROP, x : x + CROP])
    return ref, ref_labels, images, labels


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


MODEL = "sine-embedded"


def build(options: dict):
    import torch

    from sine_model import build_sine, from_pretrained
    from sine_model.engine.propagator import Propagator

    if MODEL == "proxy":  # the official decoder (256 wide, 6 blocks, 200 queries) behind a small CNN
        torch.manual_seed(0)
        options = {**options, "num_threads": torch.get_num_threads()} \
            if "num_threads" in inspect.signature(Propagator).parameters else options
        return Propagator(build_sine("cnn"), device="cpu", **options)
    if "num_threads" in inspect.signature(Propagator).parameters and "num_threads" not in options:
        options = {**options, "num_threads": torch.get_num_threads()}  # keep --threads (or torch's count)
    return Propagator(from_pretrained(MODEL), device="cpu", **options)


RECIPE = False


def prepared(options: dict, ref, ref_labels):
    """A propagator set to the reference; with ``--recipe`` also prepared by the preset's fitting recipe
    (calibration, refiner: what the CLI, the demo and the widget run), not timed."""
    prop = build(options)
    if RECIPE:
        from sine_model.fitting.preparation import ReferencePreparation

        ReferencePreparation(prop, [(ref, ref_labels)]).run()
    else:
        prop.set_references([(ref, ref_labels)])
    return prop


def timed_run(options: dict, ref, ref_labels, targets, modes) -> tuple[dict, list]:
    """Total CPU and wall seconds of one propagation, per-target intervals, and the results."""
    prop = prepared(options, ref, ref_labels)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    marks, results = [], []
    for result in prop.propagate(np.stack(targets), modes=modes, stack_axis=0):
        marks.append((time.process_time(), time.perf_counter()))
        results.append(result)
    cpu = [m[0] for m in marks]
    wall = [m[1] for m in marks]
    timing = dict(cpu_total=cpu[-1] - cpu0, wall_total=wall[-1] - wall0,
                  cpu_median_2n=float(np.median(np.diff(cpu))) if len(cpu) > 1 else float("nan"),
                  wall_median_2n=float(np.median(np.diff(wall))) if len(wall) > 1 else float("nan"))
    return timing, results


def profiled_run(options: dict, ref, ref_labels, targets, modes, top: int = 0) -> dict[str, float]:
    """CPU seconds per stage (cumulative, cProfile with a process-time timer) of one propagation.

    One target at a time (``targets_at_once=1``): cProfile sees only the thread it runs in, and targets
    answered at once run in worker threads.
    """
    from sine_model.engine.propagator import Propagator

    if "targets_at_once" in inspect.signature(Propagator).parameters:
        options = {**options, "targets_at_once": 1}
    prop = prepared(options, ref, ref_labels)
    profiler = cProfile.Profile(time.process_time)
    start = time.process_time()
    profiler.enable()
    for _ in prop.propagate(np.stack(targets), modes=modes, stack_axis=0):
        pass
    profiler.disable()
    total = time.process_time() - start
    if top:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(top)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    stages = dict.fromkeys(STAGES, 0.0)
    calls = dict.fromkeys(STAGES, 0)
    for (filename, line, name), (_cc, ncalls, _tt, cumulative, _callers) in stats.items():
        for stage, (suffix, function, owner) in STAGES.items():
            if filename.replace(os.sep, "/").endswith(suffix) and name == function \
                    and _owner_matches(filename, line, owner):
                stages[stage] += cumulative
                calls[stage] += ncalls
    stages["whole run"] = total
    stages["calls"] = calls
    return stages


def _owner_matches(filename: str, line: int, owner: str) -> bool:
    """Whether the function defined at ``filename:line`` is a method of class ``owner`` ('' = any)."""
    if not owner:
        return True
    with open(filename, encoding="utf-8") as handle:
        lines = handle.read().splitlines()[:line]
    for text in reversed(lines):
        if text.startswith("class "):
            return text[6:].split("(")[0].split(":")[0].strip() == owner
    return False


def quality(results, truths) -> dict[str, float]:
    """Mean instance F1 (IoU ≥ 0.5) and semantic foreground IoU against the crops' ground truth."""
    from sine_model.metrics import foreground_iou, match_instances

    out = {}
    if "instance" in results[0].labels:
        out["instance_f1"] = float(np.mean([match_instances(t, r.labels["instance"]).f1
                                            for r, t in zip(results, truths, strict=True)]))
    if "semantic" in results[0].labels:
        out["semantic_iou"] = float(np.mean([foreground_iou(t, r.labels["semantic"])
                                             for r, t in zip(results, truths, strict=True)]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["id", "instance", "semantic"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Propagator keyword arguments (JSON values), e.g. pad=448 batch_size=4")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    parser.add_argument("--model", default="sine-embedded",
                        help="a preset, or 'proxy': the official decoder behind a small CNN encoder (random "
                             "weights) to time the official model's non-encoder work")
    parser.add_argument("--crop", type=int, default=CROP, help="crop side (0: whole 520×696 images)")
    parser.add_argument("--top", type=int, default=0, help="print the N functions with most own time")
    parser.add_argument("--compete", action="store_true", help="run a busy-loop process beside it")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    parser.add_argument("--recipe", action="store_true",
                        help="prepare each propagator with the preset's fitting recipe first (the refiner: "
                             "what users run; fitting is not timed)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    else:  # the engine's own choice (cores, reserved cores, load), as a user gets it
        try:
            from sine_model.engine.device import choose_num_threads
        except ImportError:  # code from before issue 22: torch's default
            pass
        else:
            torch.set_num_threads(choose_num_threads())
    global MODEL, RECIPE
    MODEL, RECIPE = args.model, args.recipe
    options = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    modes = tuple(args.modes)
    rival = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if args.compete else None
    try:
        ref, ref_labels, targets, truths = sample_crops(args.targets, args.crop)
        load0 = os.getloadavg()[0]
        timed_run(options, ref, ref_labels, targets[:1], modes)  # warm-up
        timing, results = timed_run(options, ref, ref_labels, targets, modes)
        load1 = os.getloadavg()[0]
        stages = None if args.no_profile else profiled_run(options, ref, ref_labels, targets, modes, args.top)
        load2 = os.getloadavg()[0]
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    n = len(targets)
    report = dict(threads=torch.get_num_threads(), targets=n, modes=list(modes), options=options,
                  compete=args.compete, recipe=args.recipe,
                  load_1min=[round(load0, 2), round(load1, 2), round(load2, 2)],
                  cpu_s_per_target=timing["cpu_total"] / n, wall_s_per_target=timing["wall_total"] / n,
                  cpu_median_2n=timing["cpu_median_2n"], wall_median_2n=timing["wall_median_2n"],
                  **quality(results, truths))
    print(f"model {args.model}, threads {report['threads']}, {n} targets of "
          f"{args.crop or 'whole'}{'²' if args.crop else ''}, modes {' '.join(modes)}, options {options}"
          f"{', fitted by the preset recipe' if args.recipe else ''}"
          f"{', with a competing busy loop' if args.compete else ''}")
    print(f"load (1 min) before/after timing: {load0:.2f} / {load1:.2f}")
    print(f"per target: {report['cpu_s_per_target']:.3f} s CPU, {report['wall_s_per_target']:.3f} s wall "
          f"(total / N); median of targets 2..N: {timing['cpu_median_2n']:.3f} s CPU, "
          f"{timing['wall_median_2n']:.3f} s wall")
    print("quality: " + ", ".join(f"{k} {v:.4f}" for k, v in quality(results, truths).items()))
    if stages is not None:
        calls = stages.pop("calls")
        print(f"profile (cProfile, process CPU time, per target; load after {load2:.2f}):")
        for stage, seconds in stages.items():
            extra = f"  ({calls[stage]} calls)" if stage in calls else ""
            print(f"  {stage:16s} {seconds / n:7.3f} s{extra}")
        report["profile_cpu_s_per_target"] = {k: v / n for k, v in stages.items()}
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
