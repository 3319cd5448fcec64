"""Keep triton out of a process where it would crash: one with Mesa's LLVM already loaded.

The PyPI torch wheels bring triton, whose ``libtriton`` carries its own statically linked LLVM. When a
process has already loaded Mesa's ``libLLVM`` (napari's OpenGL context on a Linux desktop without
NVIDIA's driver, a VM, a remote desktop, Xvfb), loading libtriton next to it crashes the process
(segmentation fault in ``triton/knobs.py``). torch imports triton lazily: through ``torch._dynamo``,
which an optimizer's first ``step()`` imports (test-time adaptation, the refiner) and torchvision imports.

:func:`install` puts an import hook in front of ``sys.meta_path`` that decides when ``import triton`` is
attempted: if a foreign ``libLLVM`` is mapped into the process by then, the import fails with
``ModuleNotFoundError`` (torch then treats triton as absent: eager code runs as before, only
``torch.compile``'s triton backend is unavailable); otherwise it does nothing, so CUDA machines, scripts
and anything that never loaded Mesa keep triton and ``torch.compile``. ``SINE_ALLOW_TRITON=1`` turns the
hook off.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

__all__ = ["install", "foreign_llvm", "TritonBlocker", "ALLOW_ENV"]

ALLOW_ENV = "SINE_ALLOW_TRITON"


def foreign_llvm(maps_path: str = "/proc/self/maps") -> str | None:
    """Path of a shared ``libLLVM`` mapped into this process (Mesa's), or ``None``.

    Only Linux exposes ``/proc/self/maps``; elsewhere (macOS, Windows) this returns ``None``.
    """
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").rpartition(" ")[2]
                if os.path.basename(path).startswith("libLLVM"):
                    return path
    except OSError:
        return None
    return None


class TritonBlocker(importlib.abc.MetaPathFinder):
    """Meta-path finder that refuses ``triton`` while a foreign LLVM is loaded (see the module doc)."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102 (importlib protocol)
        if fullname != "triton" and not fullname.startswith("triton."):
            return None
        if os.environ.get(ALLOW_ENV) == "1":
            return None
        llvm = foreign_llvm()
        if llvm is None:
            return None
        raise ModuleNotFoundError(
            f"napari-sine keeps triton out of this process: {llvm} (Mesa's OpenGL) is loaded, and "
            "triton's own LLVM crashes the process beside it. Eager PyTorch is unaffected; only "
            f"torch.compile's triton backend is unavailable. Set {ALLOW_ENV}=1 to import it anyway.",
            name=fullname,
        )


def install() -> None:
    """Put one :class:`TritonBlocker` first on ``sys.meta_path`` (idempotent; no-op once triton is loaded)."""
    if "triton" in sys.modules:
        return  # loaded before any GL library: that order is safe
    if any(isinstance(finder, TritonBlocker) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, TritonBlocker())
