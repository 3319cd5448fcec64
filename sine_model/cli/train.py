"""``napari-sine train`` and ``napari-sine adapt``: training from a config file, test-time adaptation.

``train CONFIG`` runs :class:`~sine_model.training.loop.Trainer` (exit 0; 130 after Ctrl-C, with a
checkpoint saved; a bad config raises :class:`ValueError`, which the main CLI reports with exit 2).
``adapt`` fine-tunes a model's neck and decoder on labelled references for a number of optimiser steps
(seeded, so a run repeats on any machine; a wall-clock cap is only a safety net that says when it cut the
run short) and writes the adapted weights as a napari-sine safetensors file that ``propagate --model FILE``
accepts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sine_model.cli.common import EXIT_INTERRUPTED, EXIT_OK, classes_type, steps_type

__all__ = ["ADAPT_STEPS", "ADAPT_MAX_SECONDS", "add_train_commands", "cmd_train", "cmd_adapt"]

#: Default optimiser steps of ``napari-sine adapt``: :data:`sine_model.fitting.adaptation.ADAPT_STEPS`
#: (repeated here so that parsing the command line does not import torch; a test keeps them equal).
ADAPT_STEPS = 80
#: Default wall-clock safety cap of ``napari-sine adapt``, in seconds (``MAX_ADAPT_SECONDS`` there).
ADAPT_MAX_SECONDS = 600.0

TRAIN_EXAMPLES = """\
examples:
  napari-sine train configs/embedded.toml                    # outputs in the config's out_dir
  napari-sine train configs/embedded.toml --resume           # continue from the newest checkpoint
  napari-sine train configs/embedded.toml --out runs/try2 --minutes 60 --device cpu

outputs: config.json, log.jsonl + log.csv (step, lr, seconds, loss terms), checkpoints/step_N/
(safetensors + state.json), model.safetensors at the end.
"""


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``napari-sine train``."""
    from dataclasses import replace

    from sine_model.training.config import load_config
    from sine_model.training.loop import Trainer

    config = load_config(args.config)
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    if args.minutes is not None:
        config = replace(config, time_budget_minutes=args.minutes)
    out = args.out or config.out_dir or Path("outputs") / Path(args.config).stem
    trainer = Trainer(config, out, device=args.device, progress=not args.no_progress)
    resume = True if args.resume == "latest" else (args.resume or False)
    try:
        result = trainer.run(resume=resume)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    last = result.last_log or {}
    print(f"Stopped at step {result.step} ({result.stopped_by}) after {result.seconds / 60:.1f} min; "
          f"last loss {last.get('loss', float('nan')):.4f}; outputs in {result.out_dir}")
    return EXIT_OK


def _preset_of(model_arg: str | None) -> str:
    from safetensors import safe_open

    from sine_model.hub.presets import OFFICIAL_PRESET, PRESETS
    from sine_model.hub.pretrained import META_PRESET

    if model_arg is None:
        return OFFICIAL_PRESET
    if model_arg in PRESETS:
        return model_arg
    with safe_open(model_arg, framework="pt") as handle:
        name = (handle.metadata() or {}).get(META_PRESET)
    if name is None:
        raise ValueError(f"{model_arg} names no preset in its metadata: import it first")
    return name


def cmd_adapt(args: argparse.Namespace) -> int:
    """Run ``napari-sine adapt``."""
    from sine_model.engine.device import select_device
    from sine_model.fitting.adaptation import adapt
    from sine_model.hub.pretrained import from_pretrained, save_preset_weights
    from sine_model.io.readers import read_image

    if len(args.ref) != len(args.ref_labels):
        raise ValueError(f"{len(args.ref)} --ref but {len(args.ref_labels)} --ref-labels: give one each")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists: use --overwrite or another --out")
    preset = _preset_of(args.model)
    model = from_pretrained(args.model or preset, device=select_device(args.device))
    pairs = [(read_image(i), read_image(lab)) for i, lab in zip(args.ref, args.ref_labels, strict=True)]
    result = adapt(model, pairs, args.max_seconds, max_steps=args.steps, classes=args.classes, inplace=True,
                   pad=args.pad, scale=args.scale, channel_axis=args.channel_axis, seed=args.seed)
    digest = save_preset_weights(result.model, preset, args.out)
    first, last = (result.losses[0], result.losses[-1]) if result.losses else (float("nan"),) * 2
    cut = (f"; the {args.max_seconds:g} s safety cap cut it short of {args.steps} steps, so this result "
           "depends on the machine's speed") if result.cut_short else ""
    print(f"Adapted {result.trained_parameters:,} parameters in {result.steps} steps "
          f"({result.seconds:.1f} s{cut}); "
          f"loss {first:.3f} -> {last:.3f}. Wrote {args.out} (sha256 {digest[:12]}…); use it with "
          f"`napari-sine propagate --model {args.out} ...`")
    return EXIT_OK


def _adapt_steps(text: str) -> int:
    """argparse type of ``adapt --steps``: a positive number of optimiser steps."""
    try:
        return steps_type(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"needs a positive whole number of steps, got {text!r}") from None


def _seconds_cap(text: str) -> float:
    """argparse type of ``adapt --max-seconds``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"needs a positive number of seconds, got {text}")
    return value


def _no_seconds_budget(text: str) -> float:
    """``adapt --seconds`` (the old time budget): refused with the replacement named."""
    raise argparse.ArgumentTypeError(
        f"the budget is now a number of steps, so that a run repeats on any machine: use --steps N "
        f"(default {ADAPT_STEPS}); --max-seconds {text} keeps a wall-clock cap as a safety net")


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``adapt`` sub-commands to the main parser's ``subparsers``."""
    p = subparsers.add_parser(
        "train", help="train a SINE model (e.g. the embedded model) from a config file",
        description="Train SINE on episodes from synthetic scenes and/or folders of labelled images, "
                    "as described by a TOML or JSON config (see configs/embedded.toml).",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, metavar="CONFIG", help="training config (.toml or .json)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue from the newest checkpoint in the output folder, or from CHECKPOINT")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: the config's out_dir)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="auto, cpu, cuda, cuda:1, mps (default: the config's device)")
    p.add_argument("--steps", type=int, metavar="N", help="override the config's steps")
    p.add_argument("--minutes", type=float, metavar="M", help="override the config's time budget")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)

    a = subparsers.add_parser(
        "adapt", help="fine-tune a model's neck and decoder on labelled references (test-time adaptation)",
        description="Fine-tune the neck and decoder (the encoder stays frozen) on crop pairs of the "
                    "reference images for a number of steps (seeded: the same inputs give the same "
                    "weights on any machine); write the adapted weights as safetensors.",
    )
    a.add_argument("--ref", action="append", required=True, metavar="IMG",
                   help="reference image (repeatable)")
    a.add_argument("--ref-labels", action="append", required=True, metavar="LABELS",
                   help="label image of the preceding --ref")
    a.add_argument("--out", required=True, type=Path, metavar="FILE", help="adapted weights (.safetensors)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a.add_argument("--model", metavar="NAME_OR_PATH", help="preset name or napari-sine safetensors file")
    a.add_argument("--steps", type=_adapt_steps, default=ADAPT_STEPS, metavar="STEPS",
                   help="optimiser steps: the budget (default: %(default)s)")
    a.add_argument("--max-seconds", type=_seconds_cap, default=ADAPT_MAX_SECONDS, metavar="S",
                   help="wall-clock safety cap; a run it stops early says so (default: %(default)g)")
    a.add_argument("--seconds", type=_no_seconds_budget, help=argparse.SUPPRESS)
    a.add_argument("--pad", type=int, default=224, help="training crop side, multiple of 14 (default 224)")
    a.add_argument("--scale", type=float, default=1.0, help="resize factor used at inference")
    a.add_argument("--channel-axis", type=int, metavar="N", help="channel axis of multichannel images")
    a.add_argument("--classes", type=classes_type, metavar="LABEL:CLASS,...", help="class of each label")
    a.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(handler=cmd_adapt)
