"""Widget settings remembered between napari sessions (a small JSON file in the user config folder).

The file is ``<user config dir>/napari-sine/widget.json`` (``platformdirs``; Linux:
``~/.config/napari-sine/widget.json``); ``NAPARI_SINE_CONFIG_DIR`` moves it (tests use this). Unknown
keys and bad values are ignored, so an old or hand-edited file never stops the widget from opening.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["WidgetSettings", "settings_path", "CONFIG_ENV"]

CONFIG_ENV = "NAPARI_SINE_CONFIG_DIR"


def settings_path() -> Path:
    """Where the settings live (``$NAPARI_SINE_CONFIG_DIR/widget.json`` when that is set)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser() / "widget.json"
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-sine", appauthor=False)) / "widget.json"


@dataclass
class WidgetSettings:
    """The choices the widget remembers.

    Parameters
    ----------
    model : str
        Last preset name ("" = the default model).
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    modes : list of str
        Checked modes.
    threshold : float
        Score threshold of the ID and instance modes during a run.
    scale : float
        Resize factor applied before tiling (1 = native pixels; 0 = automatic, from the reference
        objects' size).
    memory : bool
        Time-lapse memory for ID proposals on stacks.
    min_score : float
        Review filter: proposals below it are hidden and not accepted.
    accept_scope : str
        ``all`` targets or the ``current`` one.
    recipe : bool
        Fit on the references as the model's preset recipe says (the four below are then ignored).
    calibrate : bool
        Choose the scale and instance split on the references before propagating.
    adapt : bool
        Test-time adaptation before propagating.
    adapt_steps : int
        Its budget in steps.
    refine : bool
        Fit the full-resolution refiner on the references before propagating.
    refine_steps : int
        Its training budget in steps.
    """

    model: str = ""
    device: str = "auto"
    modes: list[str] = field(default_factory=lambda: ["id", "instance", "semantic"])
    threshold: float = 0.5
    scale: float = 0.0
    memory: bool = False
    min_score: float = 0.0
    accept_scope: str = "all"
    recipe: bool = True
    calibrate: bool = False
    adapt: bool = False
    adapt_steps: int = 80
    refine: bool = False
    refine_steps: int = 400

    @classmethod
    def load(cls, path: Path | None = None) -> WidgetSettings:
        """Read the settings file; defaults for anything missing or unreadable."""
        path = path or settings_path()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(raw, dict):
            return cls()
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            value, default = raw.get(f.name), getattr(defaults, f.name)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            elif isinstance(default, list):
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            else:
                ok = isinstance(value, type(default))
            if ok:
                values[f.name] = float(value) if isinstance(default, float) else value
        return cls(**values)

    def save(self, path: Path | None = None) -> bool:
        """Write the settings (atomically); ``False`` when the folder is not writable."""
        path = path or settings_path()
        tmp_name = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False,
                                             encoding="utf-8") as tmp:
                tmp_name = tmp.name
                json.dump(asdict(self), tmp, indent=2)
            os.replace(tmp_name, path)
        except OSError:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
            return False
        return True
