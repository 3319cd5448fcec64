"""Command-line entry point ``napari-sine``.

``napari-sine propagate`` segments target images from labelled reference images and writes one label
file per mode plus ``scores.csv`` (layout: :mod:`sine_model.io`). Every input is read and checked
before anything is written. Exit status: 0 done, 2 bad input or usage (one message on stderr, no
traceback), 130 interrupted (Ctrl-C stops after the current target and keeps the finished ones).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sine_model.components import INSTANCE_SOURCES

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
MODES = ("id", "instance", "semantic")

PROPAGATE_EXAMPLES = """\
examples:
  napari-sine propagate --ref ref.tif --ref-labels ref_labels.tif --targets stack.tif \\
      --stack-axis 0 --out results/
  napari-sine propagate --ref a.png --ref-labels a_labels.png --ref b.png --ref-labels b_labels.png \\
      --targets img1.png img2.png --modes id,semantic --classes 1:1,2:1,3:2 --out results/ --overwrite

outputs in --out: labels_<mode>.tif (uint32 stack, one page per target, in order), or
labels_<mode>.zarr for stacks over 2 GiB (or --format zarr), or labels_<mode>/NNNNN.tif when the
targets differ in size; scores.csv with the columns target,label,mode,score,source.
"""


class CliError(Exception):
    """A usage or input problem: reported as one message and exit status 2."""


def _version() -> str:
    try:
        return version("napari-sine")
    except PackageNotFoundError:  # source tree that was never installed
        return "0.0.0+unknown"


def _parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {bad or [text]}: use a comma-separated subset "
                                         f"of {','.join(MODES)}")
    return modes


def parse_classes(text: str) -> dict[int, int]:
    """Parse ``LABEL:CLASS,...`` (argparse type of every ``--classes`` option)."""
    classes: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, sep, cls = item.partition(":")
        try:
            if not sep:
                raise ValueError
            classes[int(label)] = int(cls)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad --classes item {item!r}: write LABEL:CLASS pairs, e.g. 1:1,2:1,3:2"
            ) from None
    if not classes:
        raise argparse.ArgumentTypeError("--classes is empty: write LABEL:CLASS pairs, e.g. 1:1,2:2")
    return classes


def _add_propagate(subparsers: Any) -> None:
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
    add("--modes", type=_parse_modes, default=MODES, metavar="LIST",
        help="comma-separated subset of id,instance,semantic (default: all)")
    add("--out", required=True, type=Path, metavar="DIR", help="output directory")
    add("--overwrite", action="store_true", help="replace results of an earlier run in --out")
    add("--format", choices=("auto", "tiff", "zarr", "files"), default="auto",
        help="label file layout (default auto: TIFF stack, zarr above 2 GiB, files for mixed sizes)")
    add("--model", metavar="NAME_OR_PATH", help="preset name or checkpoint path")
    add("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    add("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    add("--pad", type=int, default=None,
        help="model input side in pixels, a multiple of 14 (default: what the model expects)")
    add("--scale", type=float, default=1.0, help="resize factor applied before tiling")
    add("--instances", choices=INSTANCE_SOURCES, default=None,
        help="instance answer from SINE's instance queries or the components of the semantic answer "
             "(default: the model's; the embedded model uses semantic)")
    add("--batch-size", type=int, default=1, help="tiles per model call")
    add("--memory", action="store_true", help="time-lapse: earlier frames help the ID mode")
    add("--calibrate", action="store_true",
        help="choose the scale (overrides --scale) and how instances are split on the references "
             "themselves, by cross-validation between their halves (sine_model.calibration)")
    add("--adapt", type=float, metavar="SECONDS",
        help="fine-tune neck + decoder on crop pairs of the references for at most SECONDS first")
    add("--refine", type=float, metavar="SECONDS",
        help="decide every pixel again at full resolution with a small classifier of the model's maps "
             "and image features, trained on the references for at most SECONDS (sine_model.refinement)")
    for mode in MODES:
        add(f"--threshold-{mode}", type=float, metavar="X", help=f"score threshold of the {mode} mode")
    add("--channel-axis", type=int, metavar="N", help="channel axis of multichannel images")
    add("--classes", type=parse_classes, metavar="LABEL:CLASS,...",
        help="semantic class of each label (default: all one class)")
    p.set_defaults(handler=_propagate_command)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``napari-sine`` argument parser with all available subcommands."""
    parser = argparse.ArgumentParser(
        prog="napari-sine",
        description=(
            "In-context segmentation with SINE: a reference image and its labels give ID, "
            "instance and semantic proposals on target images."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_propagate(subparsers)
    # --- further subcommands: each leaf parser sets `handler(args) -> exit status` ---------------
    from sine_model.cli_weights import add_weights_commands  # `weights import|list|verify` (issue 4)

    add_weights_commands(subparsers)
    from sine_model.cli_train import add_train_commands  # `train`, `adapt` (issue 5)

    add_train_commands(subparsers)
    from sine_model.cli_demo import add_demo_command  # `demo` on the bundled sample (issue 5)

    add_demo_command(subparsers)
    return parser


def _load_model(args: argparse.Namespace) -> Any:
    """Return the SINE model named by ``--model`` (preset or model file), or the default model.

    The default is the official preset when its weights are installed, else the embedded model.
    """
    from sine_model.weights import WeightsError, default_preset, from_pretrained

    name = args.model or default_preset()
    try:
        return from_pretrained(name, device=None)
    except (WeightsError, ValueError, OSError) as exc:
        if args.model is None:
            how = "" if "weights import" in str(exc) else (
                "\nImport weights with `napari-sine weights import SINE_FILE [--dinov2 FILE]`.")
            raise CliError(f"no --model given and the default model {name!r} is not available: {exc}{how}"
                           "\nOr pass --model NAME_OR_PATH (a preset name or a model file).") from exc
        raise CliError(f"cannot load model {name!r}: {exc}") from exc


def _open_targets(paths: Sequence[str], stack_axis: int | None) -> tuple[Any, int | None]:
    """Open the target files lazily: one file as is, several as a list of images (stacks expanded)."""
    from sine_model import io

    arrays = [io.open_image(p, lazy=True) for p in paths]
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


class _InterruptGuard:
    """First Ctrl-C: stop after the current target. Second: stop now, unless results are being written."""

    def __init__(self) -> None:
        self.requested = False
        self.writing = False
        self._previous: Any = None

    def __enter__(self) -> _InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested and not self.writing:
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupted: stopping after the current target (Ctrl-C again to stop at once).",
              file=sys.stderr)


def check_out_dir(out: Path, modes: Sequence[str], overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or that holds results of ``modes`` unless ``overwrite``."""
    from sine_model import result_writer

    clashes = result_writer.existing_outputs(out, modes)
    if clashes and not overwrite:
        raise CliError(f"{out} already holds results ({', '.join(p.name for p in clashes)}): pass "
                       "--overwrite to replace them, or choose another --out")
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file: give a directory")


def check_adapt_seconds(seconds: float | None, option: str = "--adapt") -> None:
    """``--adapt`` (or ``option``) is absent or a positive number of seconds."""
    if seconds is not None and seconds <= 0:
        raise CliError(f"{option} needs a positive number of seconds, got {seconds}")


def prepare_references(propagator: Any, pairs: list, classes: dict[int, int] | None, *, calibrate: bool,
                       adapt: float | None, refine: float | None) -> None:
    """Set the references, calibrate, adapt and fit the refiner as asked, and say what each did (stderr).

    The order and the cross-fitting rule are :class:`~sine_model.preparation.ReferencePreparation`'s.
    """
    from sine_model.preparation import ReferencePreparation

    # a PropagationError (a ValueError) from any stage names the fix
    prepared = ReferencePreparation(propagator, pairs, classes, calibrate=calibrate,
                                    adapt_seconds=adapt or 0.0, refine_seconds=refine or 0.0).run()
    for line in preparation_report(prepared):
        print(line, file=sys.stderr)


def preparation_report(prepared: Any) -> list[str]:
    """One line per stage that ran: what calibration chose, how adaptation and the refiner went."""
    lines = []
    if prepared.calibration is not None:
        result = prepared.calibration
        rules = ", ".join(f"class {c}: {s.describe()}" for c, s in sorted(result.steps.items()))
        projection = ", reference projection" if result.project_inputs else ""
        lines.append(f"calibrated on the references in {prepared.seconds['calibrate']:.1f} s: scale "
                     f"{result.scale:g}{projection}, {rules} (held-out instance F1 {result.f1:.3f} over "
                     f"{result.folds} folds)")
    if prepared.adaptation is not None:
        halves = " (one copy per reference half, averaged)" if prepared.fold_models else ""
        lines.append(f"adapted neck + decoder{halves}: {prepared.adaptation.steps} steps in "
                     f"{prepared.adaptation.seconds:.1f} s")
    if prepared.refinement is not None:
        fit = prepared.refinement
        source = "halves predicted from each other" if fit.held_out else \
            "references predicted from themselves"
        lines.append(f"refiner fitted on the references in {prepared.seconds['refine']:.1f} s: {fit.steps} "
                     f"steps on {fit.pixels} pixels ({source}), loss {fit.loss:.3f}")
    return lines


def _propagate_command(args: argparse.Namespace) -> int:
    """Check every input, then propagate and stream the results into ``--out``."""
    from sine_model import io, result_writer
    from sine_model.propagate import Propagator

    if len(args.ref) != len(args.ref_labels):
        raise CliError(f"{len(args.ref)} --ref but {len(args.ref_labels)} --ref-labels: give one "
                       "--ref-labels after each --ref")
    check_out_dir(args.out, args.modes, args.overwrite)
    check_adapt_seconds(args.adapt)
    check_adapt_seconds(args.refine, "--refine")
    if args.format == "zarr" and not io.zarr_available():
        raise CliError("--format zarr needs the 'zarr' package: pip install zarr")
    pairs = [(io.read_image(i), io.read_image(lab)) for i, lab in zip(args.ref, args.ref_labels, strict=True)]
    targets, stack_axis = _open_targets(args.targets, args.stack_axis)
    layout = _layout(targets, args.format)

    model = _load_model(args)
    thresholds = {m: getattr(args, f"threshold_{m}") for m in MODES}
    thresholds = {m: x for m, x in thresholds.items() if x is not None}
    propagator = Propagator(
        model, None if args.device == "auto" else args.device, args.precision,
        pad=args.pad,  # None: the input side the model was trained for (its `input_pad`)
        scale=args.scale, batch_size=args.batch_size, score_thresholds=thresholds,
        channel_axis=args.channel_axis, instance_source=args.instances,
    )
    prepare_references(propagator, pairs, args.classes, calibrate=args.calibrate, adapt=args.adapt,
                       refine=args.refine)
    items = targets if isinstance(targets, list) else [targets]
    has_floats = any(t.dtype.kind == "f" for t in items)  # only floats can hold NaN/inf
    n_targets = propagator.validate_targets(targets, stack_axis, check_values=has_floats)
    results = propagator.propagate(targets, args.modes, stack_axis=stack_axis, memory=args.memory)

    writer = result_writer.ResultWriter(args.out, args.modes, n_targets, layout=layout,
                                        overwrite=args.overwrite)
    return _stream_results(results, writer, n_targets, args.out)


def _stream_results(results: Any, writer: Any, n_targets: int, out: Path) -> int:
    """Write each result as it comes, with a progress bar; Ctrl-C keeps the finished targets."""
    from tqdm import tqdm

    interrupted = False
    bar = tqdm(total=n_targets, unit="target", file=sys.stderr, dynamic_ncols=True)
    try:
        with _InterruptGuard() as guard:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status.

    argparse exits on ``--help``, ``--version`` and usage errors; that exit is turned into the
    return value so that callers (and tests) get a status instead of ``SystemExit``. Bad input
    (:class:`CliError`, ``ValueError`` from reading or checking inputs, ``FileExistsError``) prints one
    message on stderr and returns 2; Ctrl-C returns 130.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    try:
        return int(handler(args))
    except (CliError, ValueError, FileExistsError) as exc:
        print(f"napari-sine {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("Interrupted; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
