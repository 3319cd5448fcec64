"""Checks of a TIFF file before its pixels are read: what it is, and whether it holds what it declares.

A TIFF header is a few bytes that may declare any size: a 186-byte file can claim 100000 × 100000 uint16
pixels (18.6 GiB), and reading it would allocate that much before failing. These checks compare what
the file declares with what it holds, from the header alone, so such files are refused with a message
instead of a ``MemoryError``; files that are empty or are not TIFF at all (a PNG or a text file named
``.tif``) are named as what they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sine_model.errors import InputFileError

__all__ = ["SUPPORTED_FORMATS", "check_tiff_file", "check_tiff_series", "sniff_format"]

SUPPORTED_FORMATS = "TIFF (.tif, .tiff), PNG (.png), JPEG (.jpg, .jpeg), zarr (directory store)"

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_OTHER_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP"}
_UNCOMPRESSED = 1  # TIFF compression tag value of raw data


def sniff_format(head: bytes) -> str | None:
    """The image format that ``head`` (a file's first bytes) starts with: "TIFF", "PNG", … or None."""
    if head[:4] in _TIFF_MAGIC:
        return "TIFF"
    return next((name for magic, name in _OTHER_MAGIC.items() if head.startswith(magic)), None)


def check_tiff_file(path: Path) -> None:
    """Refuse an empty file, or one that does not start with a TIFF header (naming what it is instead).

    Raises
    ------
    InputFileError
        The message names the file, what it is and what to do.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise InputFileError(f"Cannot read {path}: {exc.strerror or exc}. Check the file's permissions.") \
            from exc
    if not head:
        raise InputFileError(f"Cannot read {path}: the file is empty (0 bytes), not a valid TIFF. Save the "
                             f"image again. Supported formats: {SUPPORTED_FORMATS}.")
    kind = sniff_format(head)
    if kind == "TIFF":
        return
    if kind is not None:
        suffix = {"JPEG": ".jpg"}.get(kind, f".{kind.lower()}")
        raise InputFileError(f"Cannot read {path}: it is a {kind} file named {path.suffix}, not a valid "
                             f"TIFF. Rename it to {path.with_suffix(suffix).name}, or save it as TIFF. "
                             f"Supported formats: {SUPPORTED_FORMATS}.")
    text = head.isascii() and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
    what = "a text file, not a valid TIFF" if text else "not a valid TIFF nor another image format"
    raise InputFileError(f"Cannot read {path}: it is {what} (no TIFF header). Pass an image file. "
                         f"Supported formats: {SUPPORTED_FORMATS}.")


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} GiB"  # pragma: no cover


def check_tiff_series(path: Path, series: Any) -> None:
    """Refuse a series whose pages declare more pixel data than the file holds (from the header alone).

    Only the first and last pages are looked at (a stack may have thousands), which is where a damaged
    or truncated file shows.

    Raises
    ------
    InputFileError
        When a page's data would lie beyond the end of the file, or uncompressed data are shorter than
        the declared image.
    """
    size = path.stat().st_size
    pages = [p for p in (series.pages[0], series.pages[-1]) if p is not None]
    dtype = np.dtype(series.dtype)
    declared = int(np.prod(series.shape, dtype=np.float64)) * dtype.itemsize
    for page in pages:
        keyframe = getattr(page, "keyframe", None) or page  # a TiffFrame keeps its tags on its keyframe
        offsets = [int(o) for o in getattr(page, "dataoffsets", ())]
        counts = [int(c) for c in getattr(page, "databytecounts", ())]
        ends = [o + c for o, c in zip(offsets, counts, strict=False) if c]
        page_bytes = int(np.prod(keyframe.shape, dtype=np.float64)) * dtype.itemsize
        short = getattr(keyframe, "compression", None) == _UNCOMPRESSED and sum(counts) < page_bytes
        if (ends and max(ends) > size) or short or (not ends and page_bytes):
            shape = " × ".join(str(int(s)) for s in series.shape)
            raise InputFileError(
                f"Cannot read {path}: it declares {shape} {dtype} pixels ({_size(declared)}) "
                f"but the file holds {size} bytes: it is truncated or damaged, not a valid TIFF. Save or "
                f"copy it again. Supported formats: {SUPPORTED_FORMATS}.")
