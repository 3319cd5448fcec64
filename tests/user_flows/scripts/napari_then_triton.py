"""User flow: napari first, then sine_model and an optimizer step, then ``import triton``.

An optimizer's first ``step()`` imports ``torch._dynamo``, which imports triton; next to Mesa's libLLVM
(mapped by napari's OpenGL context) libtriton crashes the process. napari-sine must refuse the import
with an ImportError that names ``SINE_ALLOW_TRITON``. Prints ``USER_FLOW_RESULT {json}``; ``skip`` is
set when the situation cannot arise here (no triton installed, or no libLLVM mapped after the viewer).
"""

from __future__ import annotations

import importlib.util
import json
import sys


def mapped_llvm() -> str | None:
    """Path of a ``libLLVM`` shared library mapped into this process (Linux only), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").rpartition(" ")[2]
                if path.rpartition("/")[2].startswith("libLLVM"):
                    return path
    except OSError:
        return None
    return None


def main() -> dict:
    """Open a shown viewer, import sine_model, step AdamW, then try ``import triton``."""
    # Asked before anything can install an import hook: is triton installed at all?
    triton_installed = importlib.util.find_spec("triton") is not None
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer()  # shown: the OpenGL context exists
    QApplication.instance().processEvents()
    llvm = mapped_llvm()
    result: dict = {"llvm": llvm, "triton_installed": triton_installed, "skip": None}
    if not triton_installed:
        result["skip"] = "triton is not installed"
    elif llvm is None:
        result["skip"] = "no libLLVM is mapped after the viewer opened (not Mesa's OpenGL)"

    import sine_model  # the user's next step: the plugin's library

    result["files"] = {"sine_model": sine_model.__file__}
    import torch

    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    layer(torch.randn(3, 4)).square().mean().backward()
    optimizer.step()  # the first step imports torch._dynamo, which tries triton
    result["step"] = "done"
    try:
        import triton  # noqa: F401
    except ImportError as error:
        result["import_error"] = f"{type(error).__name__}: {error}"
    else:
        result["import_error"] = None
    result["triton_loaded"] = "triton" in sys.modules
    viewer.close()
    QApplication.instance().processEvents()
    return result


if __name__ == "__main__":
    print("USER_FLOW_RESULT " + json.dumps(main()), flush=True)
