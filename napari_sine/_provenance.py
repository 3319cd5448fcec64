"""How a proposal layer was made: model, weights hash, references, parameters and versions.

The record is plain JSON-compatible data stored in the proposal layer's ``metadata["sine"]``. It holds
everything needed to replay the run with ``napari-sine propagate``: when all inputs came from files, a
ready command line (``cli``); otherwise the file-less inputs are listed in ``cli_missing`` and the
labels' SHA-256 digests identify what was used.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

__all__ = ["array_digest", "versions", "layer_source", "cli_command", "now"]


def now() -> str:
    """Current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def array_digest(array: Any) -> str:
    """SHA-256 of an array's dtype, shape and bytes (identifies reference images and labels)."""
    data = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of the packages that shape the result."""
    found = {"python": platform.python_version()}
    for package in ("napari-sine", "torch", "timm", "numpy", "napari"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def layer_source(layer: Any) -> str | None:
    """File the layer was opened from, if napari knows it."""
    source = getattr(layer, "source", None)
    path = getattr(source, "path", None)
    return str(path) if path else None


def cli_command(record: dict[str, Any]) -> tuple[str | None, list[str]]:
    """A ``napari-sine propagate`` command replaying ``record``, or ``None`` and what has no file.

    Parameters
    ----------
    record : dict
        A run record (see :func:`napari_sine._qt.runner.run_record`).

    Returns
    -------
    command, missing : str or None, list of str
        The command, and the inputs that exist only in napari (paint them to a file to replay).
    """
    args = ["napari-sine", "propagate"]
    missing: list[str] = []
    for ref in record["references"]:
        for role, key in (("--ref", "image"), ("--ref-labels", "labels")):
            entry = ref[key]
            if entry["source"] is None or ref["plane"] is not None:
                missing.append(f"reference {key} '{entry['layer']}'" +
                               (f" plane {ref['plane']}" if ref["plane"] is not None else ""))
            else:
                args += [role, entry["source"]]
    target = record["target"]
    if target["source"] is None:
        missing.append(f"target '{target['layer']}'")
    else:
        args += ["--targets", target["source"]]
        if target["stack_axis"] is not None:
            args += ["--stack-axis", str(target["stack_axis"])]
    params = record["parameters"]
    device = params["device_requested"].split(":")[0]  # the CLI takes the device type
    args += ["--modes", ",".join(params["modes"]), "--model", record["model"]["preset"],
             "--device", device, "--precision", params["precision"],
             "--pad", str(params["pad"])]
    if params["scale"] is not None:  # None: automatic, the CLI's default too
        args += ["--scale", str(params["scale"])]
    if params.get("instance_source"):
        args += ["--instances", params["instance_source"]]
    for mode, value in params["thresholds"].items():
        args += [f"--threshold-{mode}", str(value)]
    if params["memory"]:
        args.append("--memory")
    if params.get("calibrate") is not None:  # None: the preset's recipe, which the CLI runs too
        args.append("--calibrate" if params["calibrate"] else "--no-calibrate")
    for stage in ("adapt", "refine"):
        steps = params.get(f"{stage}_steps")
        if steps is not None:
            args += [f"--{stage}", str(steps)] if steps else [f"--no-{stage}"]
    if params.get("channel_axis") is not None:
        args += ["--channel-axis", str(params["channel_axis"])]
    if params["classes"]:
        args += ["--classes", ",".join(f"{k}:{v}" for k, v in params["classes"].items())]
    args += ["--out", "OUT_DIR"]
    return (None if missing else shlex.join(args)), missing
