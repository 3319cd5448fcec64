"""``napari-sine weights {import,list,verify}``: manage pretrained weights from the command line.

Wiring into the main parser::

    subparsers = parser.add_subparsers(dest="command")
    add_weights_commands(subparsers)
    args = parser.parse_args(argv)
    return args.handler(args)          # every weights sub-command sets `handler`

Handlers return the exit status: 0 on success, 1 on any failure (errors are printed to stderr as
``error: …`` with what to do), and ``verify`` returns 1 when a hash does not match.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The handlers import the weights code (and with it torch) when they run: `napari-sine --help` stays fast.

__all__ = ["add_weights_commands", "cmd_import", "cmd_list", "cmd_verify"]


def _size(num: int | None) -> str:
    if num is None:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB"):
        if num < 1000 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.2f} {unit}"
        num /= 1000
    return f"{num:.2f} GB"  # pragma: no cover


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_import(args: argparse.Namespace) -> int:
    """Handle ``weights import SINE_FILE [--dinov2 FILE] [--preset NAME] [--offline]``."""
    from sine_model.hub.presets import OFFICIAL_PRESET
    from sine_model.hub.pretrained import WeightsError, import_checkpoint

    try:
        installed = import_checkpoint(
            args.sine_file,
            dinov2_file=args.dinov2,
            preset=args.preset or OFFICIAL_PRESET,
            allow_download=not args.offline,
            log=lambda message: print(message, file=sys.stderr),
        )
    except (WeightsError, ValueError) as exc:
        return _error(str(exc))
    print(f"installed {installed.preset}: {installed.path}")
    print(f"  size   {_size(installed.size_bytes)}")
    print(f"  sha256 {installed.sha256}")
    for note in installed.record.get("notes", []):
        print(f"  note   {note}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Handle ``weights list``: every preset, whether it is installed, its size and hash."""
    from sine_model.hub.presets import list_presets
    from sine_model.hub.pretrained import CACHE_ENV, installed_weights, weights_dir

    print(f"weights folder: {weights_dir()}  (set {CACHE_ENV} to move it)")
    for preset in list_presets():
        installed = installed_weights(preset)
        flag = "installed" if installed else "not installed"
        print(f"\n{preset.name}  [{flag}]  {preset.description}")
        print(f"  licence    {preset.licence.name}")
        published = preset.weights.sha256 or "none published by the authors"
        if installed is None:
            print(f"  source     {preset.weights.url or preset.weights.location}")
            size = preset.weights.size_bytes
            print(f"  size       {_size(size) if size else preset.weights.size_note or 'unknown'}")
            print(f"  sha256     {published}")
            continue
        print(f"  file       {installed.path}")
        print(f"  size       {_size(installed.size_bytes)}")
        origin = "published" if installed.bundled else "recorded at import"
        print(f"  sha256     {installed.sha256 or 'no record: import again'} ({origin})")
        if not installed.bundled:
            print(f"  imported   {installed.record.get('imported_at', 'unknown')}")
            source = installed.record.get("source", {})
            print(f"  source     {source.get('path', 'unknown')} (sha256 {source.get('sha256')})")
            print(f"  published  {published} (verify compares with the hash recorded at import)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Handle ``weights verify [PRESET ...]``: re-hash installed files; 1 on any mismatch."""
    from sine_model.hub.presets import list_presets
    from sine_model.hub.pretrained import WeightsError, installed_weights, verify_installed

    names = args.presets or [p.name for p in list_presets() if installed_weights(p)]
    if not names:
        print("no weights installed: nothing to verify")
        return 0
    status = 0
    for name in names:
        try:
            ok, expected, actual = verify_installed(name)
        except (WeightsError, ValueError) as exc:
            status = _error(str(exc))
            continue
        if ok:
            print(f"{name}: OK  sha256 {actual}")
        else:
            status = 1
            wanted = expected or "none recorded"
            print(
                f"{name}: MISMATCH  sha256 {actual}, expected {wanted}; the file changed or is "
                f"damaged: import it again",
                file=sys.stderr,
            )
    return status


def add_weights_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``weights`` with its ``import``, ``list`` and ``verify`` sub-commands.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The result of ``parser.add_subparsers()`` of the main parser.

    Returns
    -------
    argparse.ArgumentParser
        The ``weights`` parser. Each leaf sets ``handler(args) -> int``.
    """
    weights = subparsers.add_parser(
        "weights",
        help="import, list and verify pretrained weights",
        description="Import the official SINE checkpoint safely, list presets, verify hashes.",
    )
    commands = weights.add_subparsers(dest="weights_command", metavar="{import,list,verify}")
    commands.required = True

    imp = commands.add_parser(
        "import",
        help="check a SINE checkpoint and install it into the cache as safetensors",
        description=(
            "Read SINE_FILE (the authors' pytorch_model.bin; pickled code is refused), check every "
            "key and shape, and install it as safetensors in the cache. When the file has no DINOv2 "
            "encoder, it is taken from --dinov2 or from the Hugging Face hub."
        ),
    )
    imp.add_argument("sine_file", metavar="SINE_FILE", type=Path, help="the SINE checkpoint")
    imp.add_argument(
        "--dinov2",
        metavar="FILE",
        type=Path,
        help="DINOv2 weights: Meta's dinov2_vitl14_pretrain.pth, or timm / Hugging Face safetensors",
    )
    imp.add_argument("--preset", help="preset name (default: the official preset, sine-vitl)")
    imp.add_argument("--offline", action="store_true", help="never download DINOv2 (also: HF_HUB_OFFLINE=1)")
    imp.set_defaults(handler=cmd_import)

    lst = commands.add_parser("list", help="presets, whether installed, sizes and hashes")
    lst.set_defaults(handler=cmd_list)

    ver = commands.add_parser("verify", help="re-hash installed weights (exit 1 on mismatch)")
    ver.add_argument("presets", nargs="*", metavar="PRESET", help="default: all installed")
    ver.set_defaults(handler=cmd_verify)
    return weights
