"""``napari-sine propagate --format ome-zarr`` / ``--scheduler …``: resumable, optionally distributed runs.

Results go into ``--out/labels.ome.zarr`` as targets finish, with the run manifest ``sine-run.json``;
``scores.csv`` is written when the last target is done. Running the same command again after a crash,
a ``kill -9`` or Ctrl-C resumes where it stopped; changed inputs or options are refused unless
``--restart`` (or ``--overwrite``). Exit status as for ``propagate``: 0 done, 2 bad input, 130 interrupted
(the finished targets are kept and the run resumes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from sine_model.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    InterruptGuard,
    package_version,
)

__all__ = ["run_resumable"]


def _file_hash(path: str) -> str:
    from sine_model.hub.checkpoint_io import sha256_file

    return sha256_file(path)


def _check(args: argparse.Namespace) -> None:
    from sine_model.io.ome_zarr_labels import ome_zarr_available

    if args.format not in ("ome-zarr", "auto"):
        raise CliError(f"--scheduler writes OME-Zarr (--format ome-zarr), not --format {args.format}: leave "
                       "--format out")
    if args.memory:
        raise CliError("--memory feeds each frame's answer to the next, but resumable and distributed runs "
                       "process targets independently: leave out --memory, or use --format tiff")
    if args.scheduler and args.adapt:
        raise CliError("--adapt changes the model's weights, and workers load the weights from their file: "
                       "--adapt cannot be combined with --scheduler (yet)")
    if not ome_zarr_available():
        raise CliError("--format ome-zarr and --scheduler need zarr and ome-zarr: "
                       "pip install 'napari-sine[scale]'")
    if args.scheduler:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise CliError("--scheduler needs dask.distributed: pip install 'napari-sine[scale]'") from None
    if args.checkpoint_every < 1:
        raise CliError(f"--checkpoint-every needs a positive number of targets, got {args.checkpoint_every}")
    from sine_model.io.result_writer import check_output_dir

    check_output_dir(args.out, args.modes, overwrite=True)  # a file, under a file, read-only: refused


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that shape the results, for the run manifest (not --out, --scheduler, --restart)."""
    return {
        "references": [{"image": _file_hash(i), "labels": _file_hash(lab)}
                       for i, lab in zip(args.ref, args.ref_labels, strict=True)],
        "classes": None if args.classes is None else {str(k): v for k, v in sorted(args.classes.items())},
        "calibrate": args.calibrate, "adapt": args.adapt, "refine": args.refine,
        "device": args.device, "precision": args.precision, "cli_version": package_version(),
    }


def run_resumable(args: argparse.Namespace, prepared_propagator: Callable[[argparse.Namespace, list], Any]
                  ) -> int:
    """Run ``propagate`` resumably (and on ``--scheduler`` when given); return the exit status."""
    from tqdm import tqdm

    from sine_model.hub.pretrained import default_preset
    from sine_model.io import readers as io
    from sine_model.io.file_targets import FileTargets
    from sine_model.scaleout.model_source import ModelSource
    from sine_model.scaleout.runner import propagate_distributed

    _check(args)
    pairs = [(io.read_image(i), io.read_image(lab)) for i, lab in zip(args.ref, args.ref_labels, strict=True)]
    source = FileTargets(args.targets, args.stack_axis, args.level)
    model_source = ModelSource.resolve(args.model or default_preset())
    propagator = prepared_propagator(args, pairs)
    propagator.cache.clear()  # every target is seen once: a feature cache would only grow (up to 1 GiB)
    propagator.cache.max_bytes = 0
    bar = tqdm(total=len(source), unit="target", file=sys.stderr, dynamic_ncols=True)
    summary = None
    try:
        with InterruptGuard() as guard:
            summary = propagate_distributed(
                propagator, source, args.out, args.modes, scheduler=args.scheduler, model=model_source,
                restart=args.restart or args.overwrite, options=_options(args),
                checkpoint_every=args.checkpoint_every, device=None if args.device == "auto" else args.device,
                on_open=lambda ledger: bar.update(ledger.resumed), on_target=lambda _: bar.update(1),
                should_stop=lambda: guard.requested,
            )
    except KeyboardInterrupt:
        pass
    finally:
        bar.close()
    for line in summary.warnings if summary else []:
        print(f"warning: {line}", file=sys.stderr)
    if summary is None or not summary.complete:
        print(f"Interrupted; the finished targets are kept in {args.out}. Run the same command again to "
              "resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    resumed = f" ({summary.resumed} finished earlier)" if summary.resumed else ""
    names = ", ".join(p.name for p in summary.outputs)
    print(f"Wrote {summary.n_targets} target(s){resumed} to {args.out}: {names}")
    return EXIT_OK
