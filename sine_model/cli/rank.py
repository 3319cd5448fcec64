"""``napari-sine rank`` and ``napari-sine review``: which target to correct next, and recording decisions.

Both work on the ``--out`` folder of ``napari-sine propagate`` (no model is loaded). ``rank`` scores every
target's uncertainty from the label maps and ``scores.csv`` (:mod:`sine_model.bootstrap.ranking`), prints
the targets still to review, most uncertain first, writes ``ranking.csv`` and starts the review sidecar
``review.json`` (:mod:`sine_model.bootstrap.review`) when there is none. ``review`` records decisions in
that sidecar: accepted, corrected (with the corrected labels' file), skipped, or back to proposed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from sine_model.cli.common import EXIT_OK, CliError

__all__ = ["add_rank_commands", "RANKING_NAME"]

RANKING_NAME = "ranking.csv"

RANK_EXAMPLES = """\
examples:
  napari-sine propagate --ref ref.png --ref-labels ref_labels.tif --targets img*.png --out results/
  napari-sine rank results/ --targets img*.png          # names the targets in the review
  napari-sine review results/ --accept 0,2 --correct 1=fixed_1.tif --skip 3
  napari-sine export results/ --out dataset/ --format coco --ref ref.png --ref-labels ref_labels.tif
"""


def _index_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated target numbers, got {text!r}") from None


def _correction(text: str) -> tuple[int, str]:
    index, sep, path = text.partition("=")
    if not sep or not index.strip().isdigit() or not path:
        raise argparse.ArgumentTypeError(f"expected TARGET=LABELS_FILE (e.g. 3=fixed.tif), got {text!r}")
    return int(index), path


def add_rank_commands(subparsers: Any) -> None:
    """Add ``rank`` and ``review`` to the ``napari-sine`` subcommands."""
    p = subparsers.add_parser(
        "rank",
        help="rank the targets of a run by uncertainty: which to correct next",
        description="Score every target of a `napari-sine propagate` run by how uncertain its proposals "
        "are (disagreement between modes, object scores) and list the unreviewed ones, most "
        "uncertain first.",
        epilog=RANK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", type=Path, help="the --out folder of napari-sine propagate")
    p.add_argument(
        "--targets",
        nargs="+",
        metavar="PATH",
        help="the target files of the run (names the targets in the review; export reads them)",
    )
    p.add_argument("--stack-axis", type=int, metavar="N", help="axis of the stack in the target files")
    p.add_argument("--top", type=int, default=10, metavar="N", help="how many targets to list (default 10)")
    p.add_argument("--all", action="store_true", help="list reviewed targets too")
    p.set_defaults(handler=_rank_command)
    r = subparsers.add_parser(
        "review",
        help="record review decisions on the targets of a run",
        description="Mark targets of a `napari-sine propagate` run accepted, corrected (with the corrected "
        "label file), skipped, or proposed again; kept in <results>/review.json with who and when.",
        epilog=RANK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("results", type=Path, help="the --out folder of napari-sine propagate")
    r.add_argument(
        "--accept", type=_index_list, default=[], metavar="LIST", help="targets accepted as proposed"
    )
    r.add_argument(
        "--correct",
        type=_correction,
        action="append",
        default=[],
        metavar="N=LABELS",
        help="target N corrected; LABELS is its corrected label image (repeatable)",
    )
    r.add_argument("--skip", type=_index_list, default=[], metavar="LIST", help="targets left out")
    r.add_argument("--reset", type=_index_list, default=[], metavar="LIST", help="targets back to proposed")
    r.add_argument("--who", help="name recorded with the decisions (default: your login name)")
    r.set_defaults(handler=_review_command)


def target_names(
    paths: list[str] | None, stack_axis: int | None, n_targets: int
) -> tuple[list[str], list[str]]:
    """Readable names and source files of the run's targets (``target_NNNNN`` without files)."""
    if not paths:
        return [f"target_{i:05d}" for i in range(n_targets)], [""] * n_targets
    from sine_model.io import readers as io

    names, sources = [], []
    for path in paths:
        if stack_axis is None:
            names.append(Path(path).stem)
            sources.append(str(Path(path).resolve()))
            continue
        array = io.open_image(path, lazy=True)
        if not -array.ndim <= stack_axis < array.ndim:
            raise CliError(f"--stack-axis {stack_axis} is out of range for {path} with shape {array.shape}")
        count = array.shape[stack_axis % array.ndim]
        names += [f"{Path(path).stem}[{i}]" for i in range(count)]
        sources += [str(Path(path).resolve())] * count
    if len(names) != n_targets:
        raise CliError(
            f"--targets give {len(names)} target(s) but the results hold {n_targets}: give the "
            "same files (and --stack-axis) as to propagate"
        )
    return names, sources


def load_or_start_review(
    results: Any, folder: Path, paths: list[str] | None = None, stack_axis: int | None = None
) -> Any:
    """The run's review sidecar, started (all proposed) and written when missing."""
    from sine_model.bootstrap.review import REVIEW_NAME, ReviewState, read_review, write_review

    if (folder / REVIEW_NAME).is_file():
        review = read_review(folder)
        if len(review) != results.n_targets:
            raise CliError(
                f"{folder / REVIEW_NAME} reviews {len(review)} targets but the results hold "
                f"{results.n_targets}: it belongs to another run; move it away to start again"
            )
        if paths and not review.run.get("targets"):
            target_names(paths, stack_axis, results.n_targets)  # checks the count
            review.run.update(targets=[str(Path(p).resolve()) for p in paths], stack_axis=stack_axis)
            write_review(review, folder)
        return review
    names, _ = target_names(paths, stack_axis, results.n_targets)
    run = {"results": str(folder.resolve())}
    if paths:
        run.update(targets=[str(Path(p).resolve()) for p in paths], stack_axis=stack_axis)
    review = ReviewState(names, run)
    write_review(review, folder)
    return review


def _rank_command(args: argparse.Namespace) -> int:
    from sine_model.bootstrap.ranking import SIGNALS, rank_targets, target_uncertainty
    from sine_model.bootstrap.results import read_results

    if args.top < 1:
        raise CliError(f"--top must be at least 1, got {args.top}")
    results = read_results(args.results)
    review = load_or_start_review(results, args.results, args.targets, args.stack_axis)
    scored = [target_uncertainty(i, results.labels(i), results.scores(i)) for i in range(results.n_targets)]
    ranked = rank_targets(scored)
    with open(args.results / RANKING_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "target", "name", "score", "status", "objects", *SIGNALS])
        for position, u in enumerate(ranked, start=1):
            writer.writerow(
                [
                    position,
                    u.index,
                    review[u.index].name,
                    f"{u.score:.4f}",
                    review[u.index].status,
                    u.objects,
                    *("" if u.signals[s] is None else f"{u.signals[s]:.4f}" for s in SIGNALS),
                ]
            )
    shown = ranked if args.all else [u for u in ranked if review[u.index].status == "proposed"]
    counts = ", ".join(f"{n} {s}" for s, n in review.counts().items() if n)
    print(f"{results.n_targets} targets ({counts}); most uncertain first:")
    print(f"{'rank':>4}  {'target':>6}  {'score':>5}  {'status':<9}  name  (signals)")
    for position, u in enumerate(shown[: args.top], start=1):
        entry = review[u.index]
        print(
            f"{position:>4}  {u.index:>6}  {u.score:5.3f}  {entry.status:<9}  {entry.name}  ({u.describe()})"
        )
    if not shown:
        print("every target is reviewed: napari-sine export", args.results, "--out DATASET")
    print(f"Wrote {args.results / RANKING_NAME}; review state in {args.results / 'review.json'}")
    return EXIT_OK


def _review_command(args: argparse.Namespace) -> int:
    from sine_model.bootstrap.results import read_results
    from sine_model.bootstrap.review import write_review

    decisions = (
        [(i, "accepted", None) for i in args.accept]
        + [(i, "corrected", p) for i, p in args.correct]
        + [(i, "skipped", None) for i in args.skip]
        + [(i, "proposed", None) for i in args.reset]
    )
    if not decisions:
        raise CliError("nothing to record: give --accept, --correct, --skip or --reset")
    seen = [i for i, _, _ in decisions]
    twice = sorted({i for i in seen if seen.count(i) > 1})
    if twice:
        raise CliError(f"targets {twice} got more than one decision in this command: give each one once")
    for index, _, path in decisions:
        if path is not None and not Path(path).is_file():
            raise CliError(f"corrected labels of target {index}: {path} does not exist")
    review = load_or_start_review(read_results(args.results), args.results)
    for index, status, path in decisions:  # all checked by set() before the file is written
        review.set(index, status, who=args.who, labels=None if path is None else str(Path(path).resolve()))
    write_review(review, args.results)
    counts = ", ".join(f"{n} {s}" for s, n in review.counts().items() if n)
    print(f"Recorded {len(decisions)} decision(s) in {args.results / 'review.json'}: {counts}")
    return EXIT_OK
