"""Helpers of the user-flow tests: run what a user runs in a fresh interpreter and read its answer.

Every flow runs in its own process (``subprocess.run``), started from a temporary working directory
with a small, explicit environment, so nothing the test runner imported (torch before Qt, sine_model's
import hook), set (monkeypatched variables) or found on its path can hide a problem. Only public entry
points are used: napari's viewer and plugin API, and the ``napari-sine`` console script, because module
paths inside ``sine_model`` may move.

There is deliberately no ``conftest.py`` here (a second ``conftest`` module would shadow
``tests/conftest.py``); test modules import what they use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
SAMPLE_DIR = REPO_ROOT / "sine_model" / "sample_data"  # the bundled sample files the CLI flows read
MARKER = "USER_FLOW_RESULT "
# Bounds on waiting, never speed requirements: a flow takes 5-15 s on 2 idle cores (the napari run took
# up to 111 s while other processes loaded them); the ceilings only keep a hang from hanging the suite.
CEILING_S = 600  # a flow script's own wait (for a run to end); passed as USER_FLOW_CEILING_S
PROCESS_CEILING_S = 900  # the whole process: the wait above plus start-up and teardown
# Inherited as they are: what finding programs, libraries, the user's home and the X display needs.
PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "TMPDIR", "DISPLAY", "XAUTHORITY",
                "XDG_RUNTIME_DIR", "SYSTEMROOT")

needs_display = pytest.mark.skipif(
    sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
    reason="no X display: install Xvfb (pytest-xvfb then starts one) to run napari in a subprocess",
)


def flow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user-flow process: fresh caches and settings, offline, this checkout first.

    Parameters
    ----------
    tmp_path : Path
        The test's temporary folder; the weights cache and both settings folders are made inside it.
    **extra : str
        Further variables (they win over the defaults).

    Returns
    -------
    dict
        ``PATH``, ``HOME``, ``DISPLAY`` and the like from this process; ``PYTHONPATH`` with this checkout
        in front (the subprocess must run the code under test, whatever an editable install points at);
        ``SINE_CACHE_DIR``, ``NAPARI_SINE_CONFIG_DIR`` and ``NAPARI_CONFIG`` (napari's own settings) in
        ``tmp_path``; ``HF_HUB_OFFLINE=1``; ``USER_FLOW_CEILING_S`` (a script's longest wait).
    """
    env = {name: os.environ[name] for name in PASS_THROUGH if name in os.environ}
    inherited = os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *([inherited] if inherited else [])])
    env.update(
        SINE_CACHE_DIR=str(tmp_path / "sine-cache"),
        NAPARI_SINE_CONFIG_DIR=str(tmp_path / "sine-config"),
        NAPARI_CONFIG=str(tmp_path / "napari-config" / "settings.yaml"),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        USER_FLOW_CEILING_S=str(CEILING_S),
    )
    env.update(extra)
    return env


def napari_sine_command() -> list[str]:
    """The ``napari-sine`` console script installed next to this interpreter.

    Not ``python -m sine_model.cli``: run as ``__main__``, that module exists twice (``demo`` imports
    ``sine_model.cli`` again), so its ``CliError`` escapes ``main`` as a traceback with exit status 1.
    """
    folder = Path(sys.executable).parent
    for name in ("napari-sine", "napari-sine.exe"):
        if (folder / name).is_file():
            return [str(folder / name)]
    pytest.fail(f"the napari-sine console script is not installed next to {sys.executable}: "
                "pip install -e '.[test]'")


def run_flow(command: list[str], tmp_path: Path, env: dict[str, str] | None = None,
             timeout: float = PROCESS_CEILING_S) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a fresh process from ``tmp_path / "cwd"``; return it finished.

    Parameters
    ----------
    command : list of str
        The program and its arguments.
    tmp_path : Path
        The test's temporary folder (the working directory is made inside it, so nothing in the
        repository is importable by accident).
    env : dict, optional
        The environment; :func:`flow_env` by default.
    timeout : float
        Seconds after which the process is killed and the test fails (a ceiling, not a speed check).
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    try:
        return subprocess.run(command, cwd=cwd, env=env or flow_env(tmp_path), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{command} did not finish within {timeout} s; stderr tail:\n"
                    f"{_tail(expired.stderr)}")


def run_script(name: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
               timeout: float = PROCESS_CEILING_S) -> subprocess.CompletedProcess[str]:
    """Run ``tests/user_flows/scripts/<name>`` with this interpreter (see :func:`run_flow`)."""
    return run_flow([sys.executable, str(SCRIPTS / name), *args], tmp_path, env, timeout)


def exit_status(process: subprocess.CompletedProcess[str]) -> str:
    """The exit status in words: a signal's name (-11 is SIGSEGV, the crash of issue 16) or a number."""
    if process.returncode < 0:
        try:
            return f"{process.returncode} ({signal.Signals(-process.returncode).name})"
        except ValueError:
            pass
    return str(process.returncode)


def assert_exit_ok(process: subprocess.CompletedProcess[str]) -> None:
    """Fail with the exit status and the end of stderr unless the process exited with 0."""
    assert process.returncode == 0, (f"exit status {exit_status(process)}; stderr tail:\n"
                                     f"{_tail(process.stderr)}")


def flow_result(process: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object a flow script printed on its ``USER_FLOW_RESULT`` line (the last one)."""
    lines = [line for line in process.stdout.splitlines() if line.startswith(MARKER)]
    assert lines, (f"no {MARKER.strip()} line (exit status {exit_status(process)}); stdout tail:\n"
                   f"{_tail(process.stdout)}\nstderr tail:\n{_tail(process.stderr)}")
    return json.loads(lines[-1][len(MARKER):])


def assert_loaded_from_checkout(files: dict[str, str | None]) -> None:
    """The packages a flow imported came from this checkout (not another install or working copy)."""
    for name, path in files.items():
        assert path is not None and Path(path).resolve().is_relative_to(REPO_ROOT), (name, path, REPO_ROOT)


def sample_targets() -> list[Path]:
    """The bundled sample's target images, in order (``target_1.png`` ...)."""
    targets = sorted(SAMPLE_DIR.glob("target_*.png"))
    assert targets, f"no bundled sample targets in {SAMPLE_DIR}"
    return targets


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])
