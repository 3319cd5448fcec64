"""Installing the built wheel never replaces the user's torch, nor brings a torchvision.

napari users install torch first (the CPU, CUDA or Apple-silicon build that suits their machine), then
``pip install napari-sine``. These tests build the sdist and, from it, the wheel (``python -m build``,
as a release does), then dry-run ``pip install <wheel> --dry-run --report`` into fresh virtual
environments and read what pip would install:

- (a) an environment holding torch 2.5.0 and no torchvision,
- (b) one holding torch 2.5.0 and torchvision 0.20.0 (the release built for it).

The installed torch is a stand-in: a ``torch-2.5.0.dist-info`` with its ``METADATA`` (name, version,
requirements) in the environment's site-packages. pip's resolver decides from installed metadata only,
so it answers exactly as over a real torch 2.5.0 (a real CPU torch is a 200 MB download and 750 MB on
disk per environment, too slow for CI). ``scripts/release_check.sh`` installs the wheel for real over a
real torch and fails if its version changes. A control shows that the check here can fail: the wheel plus
an unbounded torchvision (what the old ``timm`` dependency brought) does replace the stand-in torch.

pip resolves against PyPI (``PIP_INDEX_URL`` when set), ignoring this machine's pip configuration files
(a local constraint such as ``torch<=X`` would hide a replacement). Without network to the index the tests
skip, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/"
#: Never installed or replaced by installing napari-sine into an environment that has torch.
PROTECTED = ("torch", "torchvision", "triton")
#: Environment variables pip may keep: the index, certificates, time-out, cache. All others (constraints,
#: find-links, extra indexes, …) describe this machine, not what a napari user gets from PyPI.
PIP_KEEP = ("PIP_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_CACHE_DIR", "PIP_NO_CACHE_DIR")

OLD_TORCH = {"torch": ("2.5.0", [])}
OLD_TORCH_AND_VISION = {"torch": ("2.5.0", []), "torchvision": ("0.20.0", ["torch (==2.5.0)", "numpy"])}


def index_unreachable() -> str | None:
    """Why the package index cannot be reached, or None when it can."""
    try:
        with urllib.request.urlopen(INDEX + "pip/", timeout=15) as response:
            response.read(1)
    except OSError as exc:
        return f"no network to the package index {INDEX} ({exc}): the wheel's install cannot be resolved"
    return None


def pip_env() -> dict[str, str]:
    # PYTHONPATH too: it may name this checkout, whose napari_sine.egg-info (left by the sdist build)
    # would look like an installed napari-sine to the target environment
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("PIP_") or k in PIP_KEEP) and k != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def run(argv: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, env=pip_env(), timeout=900)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def pip_has_python_option() -> bool:
    """pip >= 22.3 installs into another environment with ``--python`` (no pip needed there)."""
    from importlib.metadata import version

    major, minor = (int(part) for part in version("pip").split(".")[:2])
    return (major, minor) >= (22, 3)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel that ``python -m build`` makes from the sdist of this checkout."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the `build` package is missing: pip install -e '.[test]'")
    if (reason := index_unreachable()) is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    wheels = sorted(out.glob("napari_sine-*.whl"))
    assert len(wheels) == 1 and len(sorted(out.glob("napari_sine-*.tar.gz"))) == 1, sorted(out.iterdir())
    return wheels[0]


def environment_with(path: Path, installed: dict[str, tuple[str, list[str]]]) -> Path:
    """A fresh virtual environment whose site-packages holds the metadata of ``installed``; its python."""
    venv.create(path, with_pip=not pip_has_python_option(), symlinks=os.name != "nt")
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    for name, (version, requires) in installed.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {requirement}" for requirement in requires]
        (info / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (info / "INSTALLER").write_text("pip\n", encoding="utf-8")
        (info / "RECORD").write_text("", encoding="utf-8")
    return python


def planned_installs(python: Path, requirements: list[str], report: Path) -> dict[str, str]:
    """What ``pip install --dry-run`` would install into ``python``'s environment: name → version."""
    pip = [sys.executable, "-m", "pip", "--python", str(python)] if pip_has_python_option() else \
        [str(python), "-m", "pip"]
    run([*pip, "install", "--dry-run", "--quiet", "--report", str(report), *requirements])
    planned = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in planned}


def replaced(planned: dict[str, str]) -> dict[str, str]:
    return {name: version for name, version in planned.items()
            if name in PROTECTED or name.startswith("nvidia-")}


@pytest.mark.parametrize("installed", [OLD_TORCH, OLD_TORCH_AND_VISION],
                         ids=["torch-2.5-without-torchvision", "torch-2.5-with-torchvision-0.20"])
def test_wheel_install_keeps_the_users_torch(wheel, installed, tmp_path):
    python = environment_with(tmp_path / "env", installed)
    planned = planned_installs(python, [str(wheel)], tmp_path / "report.json")
    assert "napari-sine" in planned and "napari" in planned  # the dry run resolved the whole plugin
    assert replaced(planned) == {}, f"installing the wheel would install or replace {replaced(planned)}"
    assert "timm" not in planned


def test_the_check_catches_an_unbounded_torchvision(wheel, tmp_path):
    """Control: the issue's failure mode (an unbounded torchvision, as timm required) is detected."""
    python = environment_with(tmp_path / "env", OLD_TORCH)
    planned = planned_installs(python, [str(wheel), "torchvision"], tmp_path / "report.json")
    assert "torch" in replaced(planned) and planned["torch"] != "2.5.0", planned
