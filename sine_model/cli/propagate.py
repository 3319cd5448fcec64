"""``napari-sine propagate``: segment target images from labelled reference images.

Writes one label file per mode plus ``scores.csv`` (layout: :mod:`sine_model.io.result_writer`). Every
input is read and checked before anything is written. Exit status: 0 done, 2 bad input or usage (one
message on stderr, no traceback), 130 interrupted (Ctrl-C stops after the current target and keeps the
finished ones).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sine_model.cli import common
from sine_model.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    InterruptGuard,
    add_recipe_options,
    check_out_dir,
    classes_type,
    modes_type,
    prepare_references,
)
from sine_model.modes import INSTANCE_SOURCES, MODES

__all__ = ["add_propagate_command"]

PROPAGATE_EXAMPLES = """\
examples:
  napari-sine propagate --ref ref.tif --ref-labels ref_labels.tif --targets stack.tif \\
      --stack-axis 0 --out results/
  napari-sine propagate --ref a.png --ref-labels a_labels.png --ref b.png --ref-labels b_labels.png \\
      --targets img1.png img2.png --modes id,semantic --classes 1:1,2:1,3:2 --out results/ --overwrite
  napari-sine propagate ... --no-refine --no-calibrate     # the model alone, no fitting on the references

fitting: the model's preset has a default recipe (for the embedded model: refine 400 steps, an MLP +
random forest on image features, chosen on the evaluation sets, docs/quality.md); --calibrate/--adapt/
--refine change it, --no-... turn a stage off, --refine-with-model/--no-refine-forest change the refiner.
Budgets are steps, so the same inputs give the same proposals on any machine.

outputs in --out: labels_<mode>.tif (uint32 stack, one page per target, in order), or
labels_<mode>.zarr for stacks over 2 GiB (or --format zarr), or labels_<mode>/NNNNN.tif when the
targets differ in size; scores.csv with the columns target,label,mode,score,source.
With --format ome-zarr or --scheduler: labels.ome.zarr (OME-Zarr labels, one chunk per target) written
as targets finish, and sine-run.json: the same command run again resumes after a crash or Ctrl-C.
"""


def add_propagate_command(subparsers: Any) -> None:
    """Add ``propagate`` to the ``napari-sine`` subcommands."""
    p = subparsers.add_parser(
        "propagate", help="segment target images from labelled reference images",
        description="Propagate reference labels to target images (ID, instance and semantic proposals).",
        epilog=PROPAGATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--ref", action="append", required=True, metavar="IMG", help="reference image (repeatable)")
    add("--ref-labels", action="append", required=True, metavar="LABELS",
        help="label image of the preceding --ref (0 = background, each value one object)")
    add("--targets", nargs="+", required=True, metavar="PATH",
        help="target images or stacks: TIFF, PNG, JPEG or zarr")
    add("--stack-axis", type=int, metavar="N", help="axis of the stack in the target files")
    add("--modes", type=modes_type, default=MODES, metavar="LIST",
        help="comma-separated subset of id,instance,semantic (default: all)")
    add("--out", required=True, type=Path, metavar="DIR", help="output directory")
    add("--overwrite", action="store_true", help="replace results of an earlier run in --out")
    add("--format", choices=("auto", "tiff", "zarr", "files", "ome-zarr"), default="auto",
        help="label file layout (default auto: TIFF stack, zarr above 2 GiB, files for mixed sizes; "
             "ome-zarr: resumable, see below)")
    add("--level", type=int, metavar="N", help="resolution level of OME-Zarr multiscale targets (default 0)")
    add("--scheduler", metavar="local[:N]|tcp://HOST:PORT",
        help="run the targets on a dask.distributed cluster (implies --format ome-zarr)")
    add("--checkpoint-every", type=int, default=1, metavar="N",
        help="resumable runs: rewrite the run manifest after every N finished targets (default 1)")
    add("--restart", action="store_true",
        help="discard an unfinished resumable run in --out and start over (needed when inputs or options "
             "changed)")
    add("--model", metavar="NAME_OR_PATH", help="preset name or checkpoint path")
    add("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    add("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    add("--pad", type=int, default=None,
        help="model input side in pixels, a multiple of 14 (default: what the model expects)")
    add("--scale", type=float, default=None,
        help="resize factor applied before tiling (default: chosen from the reference objects' size so "
             "they appear at the sizes the model sees well; 1 for models that record none)")
    add("--instances", choices=INSTANCE_SOURCES, default=None,
        help="instance answer from SINE's instance queries or the components of the semantic answer "
             "(default: the model's; the embedded model uses semantic)")
    add("--batch-size", type=int, default=None,
        help="tiles per model call (default: automatic, about a million input pixels per call)")
    add("--memory", action="store_true", help="time-lapse: earlier frames help the ID mode")
    add_recipe_options(add)
    for mode in MODES:
        add(f"--threshold-{mode}", type=float, metavar="X", help=f"score threshold of the {mode} mode")
    add("--channel-axis", type=int, metavar="N", help="channel axis of multichannel images")
    add("--classes", type=classes_type, metavar="LABEL:CLASS,...",
        help="semantic class of each label (default: all one class)")
    p.set_defaults(handler=_propagate_command)


def _open_targets(paths: Sequence[str], stack_axis: int | None, level: int | None = None
                  ) -> tuple[Any, int | None]:
    """Open the target files lazily: one file as is, several as a list of images (stacks expanded)."""
    from sine_model.io import readers as io

    arrays = [io.open_image(p, lazy=True, level=level) for p in paths]
    if len(arrays) == 1 or stack_axis is None:
        return (arrays[0] if len(arrays) == 1 else arrays), stack_axis
    planes = []
    for path, array in zip(paths, arrays, strict=True):
        if not -array.ndim <= stack_axis < array.ndim:
            raise CliError(f"--stack-axis {stack_axis} is out of range for {path} with shape {array.shape}")
        axis = stack_axis % array.ndim
        planes.extend(io.plane(array, axis, i) for i in range(array.shape[axis]))
    return planes, None


def _layout(targets: Any, requested: str) -> str:
    """The label layout: per-target files when the targets differ in size."""
    mixed = isinstance(targets, list) and len({tuple(t.shape) for t in targets}) > 1
    if mixed and requested in ("tiff", "zarr"):
        raise CliError(f"--format {requested} needs targets of one size; these differ: use --format files "
                       "(one file per target) or auto")
    return "files" if mixed else requested


def _propagate_command(args: argparse.Namespace) -> int:
    """Check every input, then propagate and stream the results into ``--out``."""
    from sine_model.io import readers as io
    from sine_model.io import result_writer

    if len(args.ref) != len(args.ref_labels):
        raise CliError(f"{len(args.ref)} --ref but {len(args.ref_labels)} --ref-labels: give one "
                       "--ref-labels after each --ref")
    if args.format == "ome-zarr" or args.scheduler:
        from sine_model.cli.scale_run import run_resumable

        return run_resumable(args, _prepared_propagator)
    check_out_dir(args.out, args.modes, args.overwrite)
    if args.format == "zarr" and not io.zarr_available():
        raise CliError("--format zarr needs the 'zarr' package: pip install zarr")
    pairs = [(io.read_image(i), io.read_image(lab)) for i, lab in zip(args.ref, args.ref_labels, strict=True)]
    targets, stack_axis = _open_targets(args.targets, args.stack_axis, args.level)
    layout = _layout(targets, args.format)
    propagator = _prepared_propagator(args, pairs)
    items = targets if isinstance(targets, list) else [targets]
    has_floats = any(t.dtype.kind == "f" for t in items)  # only floats can hold NaN/inf
    n_targets = propagator.validate_targets(targets, stack_axis, check_values=has_floats)
    results = propagator.propagate(targets, args.modes, stack_axis=stack_axis, memory=args.memory)

    writer = result_writer.ResultWriter(args.out, args.modes, n_targets, layout=layout,
                                        overwrite=args.overwrite)
    return _stream_results(results, writer, n_targets, args.out)


def _prepared_propagator(args: argparse.Namespace, pairs: list) -> Any:
    """The model named by the options in a Propagator with the options, prepared on ``pairs``."""
    from sine_model.engine.propagator import Propagator

    model = common.load_model(args)  # through the module: one place to swap it
    thresholds = {m: getattr(args, f"threshold_{m}") for m in MODES}
    thresholds = {m: x for m, x in thresholds.items() if x is not None}
    propagator = Propagator(
        model, None if args.device == "auto" else args.device, args.precision,
        pad=args.pad,  # None: the input side the model was trained for (its `input_pad`)
        scale=args.scale, batch_size=args.batch_size, score_thresholds=thresholds,
        channel_axis=args.channel_axis, instance_source=args.instances,
    )
    prepare_references(propagator, pairs, args.classes, calibrate=args.calibrate, adapt=args.adapt,
                       refine=args.refine, refine_with_model=args.refine_with_model,
                       refine_forest=args.refine_forest)
    return propagator


def _stream_results(results: Any, writer: Any, n_targets: int, out: Path) -> int:
    """Write each result as it comes, with a progress bar; Ctrl-C keeps the finished targets."""
    from tqdm import tqdm

    interrupted = False
    bar = tqdm(total=n_targets, unit="target", file=sys.stderr, dynamic_ncols=True)
    try:
        with InterruptGuard() as guard:
            try:
                for result in results:
                    guard.writing = True
                    writer.write(result)
                    guard.writing = False
                    bar.update(1)
                    if guard.requested and writer.count < n_targets:
                        interrupted = True
                        break
            except KeyboardInterrupt:
                interrupted = True
            finally:
                getattr(results, "close", lambda: None)()
            guard.writing = True  # renaming into place is not interrupted
            bar.close()
            kept = writer.finish()
    except BaseException:  # an error: nothing is kept (a bad target is bad input, written nowhere)
        bar.close()
        writer.discard()
        raise
    names = ", ".join(p.name for p in kept)
    if interrupted:
        if kept:
            print(f"Interrupted after {writer.count} of {n_targets} targets; kept the finished ones in "
                  f"{out}: {names}", file=sys.stderr)
        else:
            print("Interrupted before the first target finished; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"Wrote {writer.count} target(s) to {out}: {names}")
    return EXIT_OK
