"""What PyPI and the napari hub show: the README's links work there, the metadata says what a user needs.

PyPI and the hub render the README away from the repository, so relative links and images break; the
dependencies must leave the user's torch and Qt binding alone (see test_wheel_install.py for the
resolver's answer).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
QT_BINDINGS = ("pyqt5", "pyqt6", "pyside2", "pyside6")


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_readme_links_and_images_are_absolute():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<img[^>]+src=\"([^\"]+)\"", text)
    assert targets, "no links found: the pattern is wrong"
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert relative == [], f"relative links break on PyPI and the napari hub: {relative}"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert images and all(i.startswith("https://raw.githubusercontent.com/") for i in images), images


def test_readme_has_the_install_section_for_napari_users():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Installation (napari users)", 1)[1].split("\n## ", 1)[0]
    for command in ("download.pytorch.org/whl/cpu", "pip install torch", "pip install napari-sine", "napari"):
        assert command in section, command


def test_dependencies_leave_torch_builds_and_qt_to_the_user():
    base = {requirement_name(r): r for r in PROJECT["dependencies"]}
    assert base["torch"].replace(" ", "") == "torch>=2.4"  # a lower bound only
    assert not {"torchvision", "timm", "magicgui"} & set(base), sorted(base)
    assert not set(QT_BINDINGS) & set(base)
    extras = PROJECT["optional-dependencies"]
    assert extras["qt"] == ["napari[pyqt6]"]  # napari's own pick of Qt builds
    assert {"timm", "build"} <= set(map(requirement_name, extras["test"]))


def test_version_and_urls():
    assert PROJECT["dynamic"] == ["version"]
    import sine_model

    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", sine_model.__version__), sine_model.__version__
    assert {"Source", "Issues", "Documentation"} <= set(PROJECT["urls"])
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())
