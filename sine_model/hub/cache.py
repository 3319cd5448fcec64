"""The weights cache: where it lives, atomic writes with a JSON record, and DINOv2 from the hub.

Installed weights are ``<cache root>/weights/<preset>.safetensors`` plus a ``<preset>.json`` record
(sha256, sources, date) beside it. Both are written through temporary files and atomic renames, so a
failure never leaves a half-written file behind.

Environment variables
---------------------
``SINE_CACHE_DIR``
    Root of napari-sine's cache; weights live in ``$SINE_CACHE_DIR/weights``. Default: the platform
    cache directory (``platformdirs.user_cache_dir("napari-sine")``, e.g. ``~/.cache/napari-sine``).
    When the default is not writable (read-only home) imports fall back to a per-user temporary
    directory with a warning; an unwritable ``SINE_CACHE_DIR`` is an error that says so.
``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``)
    Never contact the Hugging Face hub. A DINOv2 file already in the hub cache is still used; a missing
    one raises :class:`~sine_model.errors.WeightsNotFoundError` with the manual steps at once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sine_model.errors import WeightsError, WeightsNotFoundError
from sine_model.hub.checkpoint_io import sha256_file
from sine_model.hub.presets import Preset, get_preset

__all__ = [
    "CACHE_ENV",
    "atomic_write",
    "cache_root",
    "fetch_dinov2",
    "install_steps",
    "read_record",
    "record_path",
    "weights_dir",
    "write_installed",
    "write_temp",
]

CACHE_ENV = "SINE_CACHE_DIR"


# ------------------------------------------------------------------------------- cache folders


def cache_root() -> Path:
    """napari-sine's cache root: ``$SINE_CACHE_DIR`` or the platform user cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # platformdirs is a dependency; keep working in a bare environment
        return Path.home() / ".cache" / "napari-sine"
    return Path(user_cache_dir("napari-sine", appauthor=False))


def _fallback_root() -> Path:
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"napari-sine-{user}"


def _ensure_writable(folder: Path, private: bool = False) -> None:
    folder.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
    if private and not _owned(folder):  # a shared temp folder: refuse one made by someone else
        raise PermissionError(f"{folder} belongs to another user")
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
        pass


def _owned(folder: Path) -> bool:
    return not hasattr(os, "getuid") or folder.stat().st_uid == os.getuid()


def weights_dir(*, create: bool = False) -> Path:
    """Folder holding installed weights (``<cache root>/weights``).

    Parameters
    ----------
    create : bool
        Create it and make sure it is writable. If the default location is not writable, a per-user
        temporary folder is used with a warning; if ``$SINE_CACHE_DIR`` is not writable, raise.

    Raises
    ------
    WeightsError
        No writable cache folder could be found.
    """
    folder = cache_root() / "weights"
    if not create:
        fallback = _fallback_root() / "weights"
        if not folder.is_dir() and not os.environ.get(CACHE_ENV) and fallback.is_dir():
            return fallback if _owned(fallback) else folder
        return folder
    try:
        _ensure_writable(folder)
        return folder
    except OSError as exc:
        if os.environ.get(CACHE_ENV):
            raise WeightsError(
                f"{CACHE_ENV}={os.environ[CACHE_ENV]!r} is not a writable folder ({exc}); set "
                f"{CACHE_ENV} to a folder you can write to"
            ) from exc
        fallback = _fallback_root() / "weights"
        try:
            _ensure_writable(fallback, private=True)
        except OSError as exc2:
            raise WeightsError(
                f"cannot write the weights cache at {folder} ({exc}) nor at {fallback} ({exc2}); "
                f"set {CACHE_ENV} to a writable folder"
            ) from exc2
        warnings.warn(
            f"weights cache {folder} is not writable ({exc}); using {fallback}, which the system "
            f"may delete. Set {CACHE_ENV} to a writable folder to keep imported weights.",
            stacklevel=2,
        )
        return fallback


# ------------------------------------------------------------------------------- atomic writing


def write_temp(dest: Path, write: Callable[[Path], None]) -> Path:
    """Write through ``write`` into a fsynced temporary file next to ``dest``; remove it on error.

    Returns
    -------
    Path
        The complete temporary file, to be moved onto ``dest`` with :func:`os.replace`.
    """
    handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the usual file mode
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(dest: Path, write: Callable[[Path], None]) -> None:
    """Write ``dest`` completely or not at all (temporary file, then ``os.replace``)."""
    os.replace(write_temp(dest, write), dest)


def record_path(weights_file: Path) -> Path:
    """The JSON import record kept beside a weights file (``<preset>.json``)."""
    return weights_file.with_suffix(".json")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-sine")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def write_installed(
    dest: Path,
    write: Callable[[Path], None],
    *,
    preset: str,
    source: dict[str, Any],
    encoder: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """Write a weights file and its JSON import record; neither is replaced unless both were written.

    Parameters
    ----------
    dest : Path
        The weights file to write (``<preset>.safetensors`` in :func:`weights_dir`).
    write : callable
        Writes the weights into the temporary path it is given.
    preset : str
        Preset name.
    source, encoder : dict
        Where the weights and the DINOv2 encoder came from (path, sha256, …).
    notes : list of str
        What the import changed (dropped keys, casts, mapped names).

    Returns
    -------
    dict
        The record written, with the sha256 and size of the weights file.
    """
    tmp = write_temp(dest, write)
    try:
        record = {
            "format_version": 1,
            "preset": preset,
            "file": dest.name,
            "sha256": sha256_file(tmp),
            "size_bytes": tmp.stat().st_size,
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "napari_sine_version": _version(),
            "source": source,
            "encoder": encoder,
            "notes": notes,
        }
        text = json.dumps(record, indent=2) + "\n"
        tmp_record = write_temp(record_path(dest), lambda p: p.write_text(text, "utf-8"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    os.replace(tmp_record, record_path(dest))
    return record


def read_record(weights_file: Path) -> tuple[Any, str | None]:
    """The JSON record beside ``weights_file`` and the sha256 it holds.

    Returns
    -------
    record, sha256 : object, str or None
        ``({}, None)`` when the record is missing or unreadable; ``sha256`` is ``None`` when the
        record is not a JSON object.
    """
    try:
        record = json.loads(record_path(weights_file).read_text(encoding="utf-8"))
        sha = record.get("sha256") if isinstance(record, dict) else None
    except (OSError, ValueError):
        record, sha = {}, None
    return record, sha


def install_steps(preset: Preset) -> str:
    """How to install ``preset``'s weights: where to download them and the import command."""
    source = preset.weights
    size = f" ({source.size_note})" if source.size_note else ""
    return (
        f"weights for preset {preset.name!r} are not installed (looked in {weights_dir()}).\n"
        f"  1. Download {source.description}{size}: {source.url}\n"
        f"  2. Import it: napari-sine weights import PATH/TO/{source.filename or 'FILE'} "
        f"--preset {preset.name}\n"
        "     If the file has no DINOv2 encoder, add --dinov2 FILE, or stay online so that it is "
        "fetched from the Hugging Face hub.\n"
        f"The cache folder can be changed with {CACHE_ENV}."
    )


# ------------------------------------------------------------------------------- DINOv2 from the hub


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set now (or when huggingface_hub was imported)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    hub = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(hub, "HF_HUB_OFFLINE", False))


def _find_in_hub_cache(repo_id: str, filename: str) -> Path | None:
    """A file already in the Hugging Face cache (purely local, never the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Connect to the hub's host within ``timeout`` s (DNS included), so offline fails fast."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _download_from_hub(repo_id: str, filename: str) -> Path:
    """Download one hub file with progress: the only network access of this module."""
    if not _hub_reachable():
        raise OSError("the Hugging Face hub cannot be reached (no network?)")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, etag_timeout=10))


def _dinov2_steps(preset: Preset, reason: str) -> str:
    lines = [
        f"the SINE file has no DINOv2 encoder and it could not be fetched: {reason}.",
        "Get one of these files by hand (on any machine with internet), then import again with --dinov2:",
    ]
    lines += [f"  - {s.description}: {s.url}" for s in preset.encoder_weights]
    lines += [
        f"  napari-sine weights import SINE_FILE --dinov2 PATH/TO/FILE --preset {preset.name}",
        "Or import while online (HF_HUB_OFFLINE unset): the file is then fetched from the hub.",
    ]
    return "\n".join(lines)


def fetch_dinov2(preset: str | Preset, *, allow_download: bool = True) -> Path:
    """Path of a DINOv2 file for ``preset``: from the Hugging Face cache, else downloaded.

    Never touches the network when the file is cached, when ``HF_HUB_OFFLINE`` is set or when
    ``allow_download`` is false; then a missing file raises at once.

    Raises
    ------
    WeightsNotFoundError
        With the manual download steps.
    """
    preset = get_preset(preset)
    hub = [s for s in preset.encoder_weights if s.kind == "hf_hub"]
    for source in hub:
        cached = _find_in_hub_cache(source.location, source.filename)
        if cached is not None:
            return cached
    if not hub:
        raise WeightsNotFoundError(_dinov2_steps(preset, "the preset names no hub source"))
    if _hub_offline():
        raise WeightsNotFoundError(
            _dinov2_steps(preset, "HF_HUB_OFFLINE is set and the file is not in the hub cache")
        )
    if not allow_download:
        raise WeightsNotFoundError(_dinov2_steps(preset, "downloads are disabled (--offline)"))
    try:
        return _download_from_hub(hub[0].location, hub[0].filename)
    except Exception as exc:  # any network or hub error → the same clear instructions
        raise WeightsNotFoundError(_dinov2_steps(preset, f"download failed ({exc})")) from exc
