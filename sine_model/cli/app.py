"""The ``napari-sine`` command: one parser, a subcommand per module of :mod:`sine_model.cli`.

Exit status: 0 done, 2 bad input or usage (one message on stderr, no traceback), 130 interrupted.
Subcommand modules are imported here, but each imports torch and the model only when it runs, so
``napari-sine --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sine_model.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, cli_message, package_version
from sine_model.cli.demo import add_demo_command
from sine_model.cli.export import add_export_command
from sine_model.cli.propagate import add_propagate_command
from sine_model.cli.rank import add_rank_commands
from sine_model.cli.train import add_train_commands
from sine_model.cli.weights import add_weights_commands
from sine_model.errors import SineError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the ``napari-sine`` argument parser with all available subcommands."""
    parser = argparse.ArgumentParser(
        prog="napari-sine",
        description=(
            "In-context segmentation with SINE: a reference image and its labels give ID, "
            "instance and semantic proposals on target images."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # each leaf parser sets `handler(args) -> exit status`
    add_propagate_command(subparsers)
    add_rank_commands(subparsers)
    add_export_command(subparsers)
    add_weights_commands(subparsers)
    add_train_commands(subparsers)
    add_demo_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status.

    argparse exits on ``--help``, ``--version`` and usage errors; that exit is turned into the
    return value so that callers (and tests) get a status instead of ``SystemExit``. Bad input
    (:class:`~sine_model.errors.SineError`, ``ValueError`` from reading or checking inputs,
    ``FileExistsError``) prints one message on stderr and returns 2; Ctrl-C returns 130.
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
    except (SineError, ValueError, FileExistsError) as exc:
        print(f"napari-sine {args.command}: error: {cli_message(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("Interrupted; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
