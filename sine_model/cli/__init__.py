"""Layer 7 — the `napari-sine` command: one module per command, shared helpers in `common`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``napari-sine`` console script (:func:`sine_model.cli.app.main`)."""
    from sine_model.cli.app import main as run

    return run(argv)
