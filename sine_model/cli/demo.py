"""``napari-sine demo``: the whole job on the bundled sample, offline, scored against its labels.

The bundled sample (:mod:`sine_model.sample_data`, four CC0 DSB2018 nuclei images with labels) is
propagated from its labelled reference to its three targets with the default model (the official
preset when installed, else the embedded one shipped in the package), the proposals are written as
``propagate`` writes them, and each target's object counts and scores against the bundled ground truth
are printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sine_model.cli import common
from sine_model.cli.common import add_recipe_options, check_out_dir, prepare_references
from sine_model.modes import INSTANCE_SOURCES, MODES

__all__ = ["add_demo_command", "cmd_demo"]


def _count(labels) -> int:
    import numpy as np

    return int(np.count_nonzero(np.unique(labels)))


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``napari-sine demo``; return the exit status."""
    from sine_model.engine.propagator import Propagator
    from sine_model.hub.pretrained import default_preset
    from sine_model.io import result_writer
    from sine_model.metrics import foreground_iou, match_instances
    from sine_model.sample_data import load_sample

    check_out_dir(args.out, MODES, args.overwrite)
    name = args.model or default_preset()
    model = common.load_model(args)  # through the module: one place to swap it
    sample = load_sample()
    pairs = [(sample.reference, sample.reference_labels)]
    propagator = Propagator(model, None if args.device == "auto" else args.device, pad=args.pad,
                            instance_source=args.instances)
    print(f"model {name} on {propagator.device}; reference: bundled 'reference' "
          f"({_count(sample.reference_labels)} labelled nuclei); {len(sample.names)} targets")
    fit_start = time.perf_counter()
    prepare_references(propagator, pairs, None, calibrate=args.calibrate, adapt=args.adapt,
                       refine=args.refine, refine_with_model=args.refine_with_model,
                       refine_forest=args.refine_forest)
    print(f"fitting on the reference took {time.perf_counter() - fit_start:.1f} s")
    writer = result_writer.ResultWriter(args.out, MODES, len(sample.names), overwrite=args.overwrite)
    header = (f"{'target':<10} {'truth':>5} {'instances':>9} {'F1@0.5':>7} {'ID objs':>7} "
              f"{'semantic IoU':>12} {'elapsed s':>9}")
    print(header)
    start = time.perf_counter()
    try:
        results = propagator.propagate(sample.targets, MODES, stack_axis=0)
        for target, truth, result in zip(sample.names, sample.target_labels, results, strict=True):
            writer.write(result)
            labels = result.labels
            score = match_instances(truth, labels["instance"])
            print(f"{target:<10} {_count(truth):>5} {_count(labels['instance']):>9} {score.f1:>7.3f} "
                  f"{_count(labels['id']):>7} {foreground_iou(truth, labels['semantic']):>12.3f} "
                  f"{time.perf_counter() - start:>9.1f}", flush=True)  # (targets may be answered at once)
        kept = writer.finish()
    except BaseException:
        writer.discard()
        raise
    print(f"Wrote {', '.join(p.name for p in kept)} to {args.out}. 'truth' counts the bundled labels; "
          "ID proposals follow the reference's objects into views of the same scene (a time-lapse, an "
          "overlapping field); these targets are other fields, so few or no ID objects is the right answer.")
    return 0


DEMO_EXAMPLES = """\
examples:
  napari-sine demo                              # writes demo_output/, prints counts and scores
  napari-sine demo --no-calibrate --no-refine --out demo_model_only --overwrite
  napari-sine demo --adapt 80 --out demo_adapted --overwrite
"""


def add_demo_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command to the main parser's ``subparsers``."""
    p = subparsers.add_parser(
        "demo", help="propagate the bundled sample data and score it (offline)",
        description="Propagate the bundled CC0 DSB2018 sample from its labelled reference to its three "
                    "targets, write the proposals and print object counts, instance F1 and semantic IoU "
                    "against the bundled labels.",
        epilog=DEMO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"), metavar="DIR",
                   help="output folder (default: demo_output)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="preset name or model file (default: official if installed, else embedded)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    p.add_argument("--pad", type=int, default=None, help="model input side (default: the model's)")
    p.add_argument("--instances", choices=INSTANCE_SOURCES, default=None,
                   help="instance answer from SINE's instance queries or the components of the semantic "
                        "answer (default: the model's)")
    add_recipe_options(p.add_argument, "the reference")
    p.set_defaults(handler=cmd_demo)
