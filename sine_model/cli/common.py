"""Helpers shared by the ``napari-sine`` commands: exit codes, option types, loading the model, checking
``--out``, preparing the references and reporting what each fitting stage did, Ctrl-C handling.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sine_model.errors import CliError, InputError
from sine_model.modes import parse_classes, parse_modes

__all__ = [
    "EXIT_OK", "EXIT_USAGE", "EXIT_INTERRUPTED", "CliError", "InterruptGuard", "check_out_dir",
    "add_recipe_options", "classes_type", "load_model", "modes_type", "package_version",
    "preparation_report", "prepare_references", "steps_type", "cli_message",
]

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130

# The library's messages name Python parameters; on the command line the same words are flags.
_PARAMETER_FLAGS = {"stack_axis": "--stack-axis", "channel_axis": "--channel-axis",
                    "batch_size": "--batch-size", "instance_source": "--instances",
                    "tile_overlap": "tile overlap"}
_START_FLAGS = re.compile(r"^(pad|scale) (must|is)")
_THRESHOLD = re.compile(r"\b(?:the )?(id|instance|semantic) score threshold\b")


def cli_message(message: str) -> str:
    """``message`` with parameter names as the command line's flags (``stack_axis`` → ``--stack-axis``).

    The library says ``stack_axis (CLI: --stack-axis)`` where it knows both; here the flag alone is kept.
    """
    message = re.sub(r"\w+ \(CLI: (--[\w-]+)\)", r"\1", message)
    for name, flag in _PARAMETER_FLAGS.items():
        message = re.sub(rf"(?<![\w-]){name}\b", flag, message)
    message = _START_FLAGS.sub(r"--\1 \2", message)
    return _THRESHOLD.sub(lambda m: f"--threshold-{m.group(1)}", message)


def package_version() -> str:
    """The napari-sine version (``sine_model.__version__``, the one place it is written)."""
    from sine_model import __version__

    return __version__


def modes_type(text: str) -> tuple[str, ...]:
    """argparse type of ``--modes``: a comma-separated subset of id,instance,semantic."""
    try:
        return parse_modes(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def classes_type(text: str) -> dict[int, int]:
    """argparse type of every ``--classes`` option: ``LABEL:CLASS`` pairs, at least one."""
    try:
        classes = parse_classes(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("classes:", "bad --classes item:", 1)) from None
    if not classes:
        raise argparse.ArgumentTypeError("--classes is empty: write LABEL:CLASS pairs, e.g. 1:1,2:2")
    return classes


def load_model(args: argparse.Namespace) -> Any:
    """Return the SINE model named by ``--model`` (preset or model file), or the default model.

    The default is the official preset when its weights are installed, else the embedded model.
    """
    from sine_model.hub.pretrained import WeightsError, default_preset, from_pretrained

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


class InterruptGuard:
    """First Ctrl-C: stop after the current target. Second: stop now, unless results are being written.

    SIGTERM (``kill``, a scheduler ending the job) stops at once, unless results are being written, with
    the same clean-up as Ctrl-C: the finished targets are kept and no temporary file is left.
    """

    def __init__(self) -> None:
        self.requested = False
        self.writing = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested and not self.writing:
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupted: stopping after the current target (Ctrl-C again to stop at once).",
              file=sys.stderr)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        print("\nTerminated: keeping the finished targets.", file=sys.stderr)
        self.requested = True
        if not self.writing:
            raise KeyboardInterrupt


def check_out_dir(out: Path, modes: Sequence[str], overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, under a file, read-only, or holds results of ``modes`` unless
    ``overwrite`` (:func:`~sine_model.io.result_writer.check_output_dir`, the one check)."""
    from sine_model.io import result_writer

    result_writer.check_output_dir(out, modes, overwrite, flag="--out")


def steps_type(text: str) -> int:
    """argparse type of ``--adapt`` / ``--refine``: a positive number of optimiser steps."""
    try:
        steps = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a whole number of steps, got {text!r}") from None
    if steps <= 0:
        raise argparse.ArgumentTypeError(f"needs a positive number of steps, got {steps} (--no-adapt / "
                                         "--no-refine turn the stage off)")
    return steps


def add_recipe_options(add: Any, what: str = "the references") -> None:
    """The options that change the preset's fitting recipe (``add``: a parser's ``add_argument``)."""
    add("--calibrate", action="store_true", default=None,
        help=f"choose the scale and how touching objects are split on {what} (cross-validation between "
             "halves; default: the preset's recipe)")
    add("--no-calibrate", dest="calibrate", action="store_false", help="do not calibrate")
    add("--adapt", type=steps_type, metavar="STEPS",
        help=f"fine-tune neck + decoder on crop pairs of {what} for STEPS steps per copy first "
             "(default: the preset's recipe)")
    add("--no-adapt", dest="adapt", action="store_const", const=0, help="do not adapt")
    add("--refine", type=steps_type, metavar="STEPS",
        help="decide every pixel again at full resolution with a small pixel classifier (an MLP, with the "
             f"recipe's choices below) trained on {what} for STEPS steps (default: the preset's recipe)")
    add("--no-refine", dest="refine", action="store_const", const=0, help="no full-resolution refiner")
    add("--refine-with-model", dest="refine_with_model", action="store_true", default=None,
        help="the refiner reads the model's class maps besides the image features (default: the preset's "
             "recipe)")
    add("--refine-without-model", dest="refine_with_model", action="store_false",
        help="the refiner reads image features only")
    add("--refine-forest", dest="refine_forest", action="store_true", default=None,
        help="average the refiner's MLP with a random forest on the same features (default: the preset's "
             "recipe)")
    add("--no-refine-forest", dest="refine_forest", action="store_false", help="the refiner's MLP alone")


def prepare_references(propagator: Any, pairs: list, classes: dict[int, int] | None, *,
                       calibrate: bool | None, adapt: int | None, refine: int | None,
                       refine_with_model: bool | None = None, refine_forest: bool | None = None) -> None:
    """Set the references and run the preset's fitting recipe, with the options' changes (None: the
    recipe's), and say what each stage did or why it stepped aside (stderr).

    The order and the cross-fitting rule are :class:`~sine_model.fitting.preparation.ReferencePreparation`'s.
    """
    from sine_model.fitting.preparation import ReferencePreparation

    prepared = ReferencePreparation(propagator, pairs, classes, calibrate=calibrate, adapt_steps=adapt,
                                    refine_steps=refine, refine_with_model=refine_with_model,
                                    refine_forest=refine_forest)
    print(f"fitting recipe: {prepared.recipe.describe()}", file=sys.stderr)
    prepared.run()
    for line in preparation_report(prepared):
        print(line, file=sys.stderr)


def preparation_report(prepared: Any) -> list[str]:
    """One line per stage that was asked for: what it did, or why it stepped aside."""
    return prepared.report()
