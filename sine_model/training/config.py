"""Training configuration: dataclasses with the recipe's defaults, loaded from a TOML or JSON file.

Layout of a file (every key optional except the data sources; see ``configs/embedded.toml``)::

    seed = 0                     # model init, episode sampling and point sampling
    steps = 3000                 # optimizer steps (the schedule decays to 0 at this step)
    episodes_per_step = 4        # (reference, target) episodes per optimizer step
    time_budget_minutes = 60     # optional: stop earlier when this much training time has passed
    checkpoint_every = 250
    keep_checkpoints = 3
    log_every = 10
    out_dir = "outputs/embedded" # relative to the config file; `napari-sine train --out` overrides
    device = "auto"

    [model]      kind = "cnn" | "filterbank" | "vits" | "vitb" | "vitl", widths, init = "file.safetensors"
    [optim]      lr, weight_decay, betas, eps, warmup_steps, grad_clip
    [loss]       class/mask/dice weights, no_object_weight, num_points, oversample/importance ratios
    [data]       pad, crop_prob, min_area, [data.augment] (AugmentConfig fields)
    [[data.synthetic]]  weight, n_groups, images_per_group, seed, [data.synthetic.scene] (SceneConfig)
    [[data.folders]]    root, manifest, include, exclude, exclude_splits, splits_key, weight

Relative paths are resolved against the folder of the config file. Every problem raises
:class:`ConfigError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sine_model.modeling.config import ModelConfig
from sine_model.training.augment import AugmentConfig
from sine_model.training.dataclass_parse import ConfigError, build_dataclass
from sine_model.training.synthetic import SceneConfig

__all__ = [
    "ConfigError",
    "ModelSection",
    "OptimConfig",
    "LossConfig",
    "SyntheticSource",
    "FolderSource",
    "DataConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
]

@dataclass(frozen=True)
class ModelSection(ModelConfig):
    """``[model]`` of a training config: a :class:`~sine_model.modeling.config.ModelConfig` with the
    embedded recipe's defaults (small CNN, dim 128) and ``init``, an optional napari-sine
    safetensors state dict to start from (strict load)."""

    kind: str = "cnn"
    dim: int = 128
    num_heads: int = 4
    ffn_dim: int = 512
    num_fusion_layers: int = 1
    num_decoder_layers: int = 3
    num_queries: int = 50
    init: str | None = None

    def architecture(self) -> ModelConfig:
        """The architecture alone (what an export records)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)}
        return ModelConfig(**fields)


@dataclass
class OptimConfig:
    """AdamW with linear warmup and linear decay to 0 at the last step (official: DeepSpeed Adam)."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay, warmup_steps and grad_clip must be >= 0 (grad_clip 0 = off)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")


@dataclass
class LossConfig:
    """:class:`~sine_model.training.losses.SetCriterion` settings (official defaults)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_ratio: float = 0.75
    deep_supervision: bool = True

    def __post_init__(self) -> None:
        _positive("num_points", self.num_points)
        if not 0 <= self.importance_ratio <= 1 or self.oversample_ratio < 1:
            raise ValueError("importance_ratio must be in [0, 1] and oversample_ratio >= 1")


@dataclass
class SyntheticSource:
    """Procedural scenes (:func:`~sine_model.training.synthetic.synthetic_groups`), made once at start.

    ``scene`` holds :class:`~sine_model.training.synthetic.SceneConfig` fields. ``weight`` is the
    probability mass of this source relative to the others (shared equally by its groups).
    """

    n_groups: int = 16
    images_per_group: int = 4
    seed: int = 0
    weight: float = 1.0
    scene: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive("n_groups", self.n_groups)
        _positive("images_per_group", self.images_per_group)
        _positive("weight", self.weight)

    def scene_config(self) -> SceneConfig:
        """The :class:`SceneConfig` (lists turned into tuples)."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.scene.items()}
        known = {f.name for f in dataclasses.fields(SceneConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"scene has unknown keys {unknown}; known: {sorted(known)}")
        return SceneConfig(**values)


@dataclass
class FolderSource:
    """A folder of labelled images (:func:`~sine_model.training.folders.folder_groups`).

    ``exclude_splits`` names a JSON file such as ``bench/eval_splits.json``; the groups listed under
    ``[splits_key]["heldout_groups"]`` (``splits_key`` defaults to the folder's name) are excluded in
    addition to ``exclude``.
    """

    root: str = ""
    manifest: str | None = None
    include: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    exclude_splits: str | None = None
    splits_key: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.root:
            raise ValueError("root is required (a folder with images/ and labels/)")
        _positive("weight", self.weight)

    def excluded_groups(self) -> list[str]:
        """``exclude`` plus the held-out groups read from ``exclude_splits``."""
        groups = list(self.exclude)
        if self.exclude_splits is None:
            return groups
        path = Path(self.exclude_splits)
        if not path.is_file():
            raise ValueError(f"exclude_splits file {path} does not exist: create it or list the held-out "
                             "groups in `exclude` instead")
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"exclude_splits file {path} is not valid JSON: {exc}") from None
        key = self.splits_key or Path(self.root).name
        entry = splits.get(key) if isinstance(splits, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("heldout_groups"), list):
            raise ValueError(f"exclude_splits file {path} has no {key!r} entry with a list "
                             "'heldout_groups' (set splits_key to the right entry)")
        return groups + [str(g) for g in entry["heldout_groups"]]


@dataclass
class DataConfig:
    """Episode sampling: model input side, pair settings, augmentation and the data sources."""

    pad: int = 224
    crop_prob: float = 0.5
    min_area: int = 8
    augment: dict[str, Any] = field(default_factory=dict)
    synthetic: list[SyntheticSource] = field(default_factory=list)
    folders: list[FolderSource] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pad < 14 or self.pad % 14:
            raise ValueError(f"pad must be a positive multiple of 14, got {self.pad}")
        if not 0 <= self.crop_prob <= 1:
            raise ValueError(f"crop_prob must be in [0, 1], got {self.crop_prob}")
        if not self.synthetic and not self.folders:
            raise ValueError("no data source: add [[data.synthetic]] and/or [[data.folders]] sections")

    def augment_config(self) -> AugmentConfig:
        """The :class:`AugmentConfig` (``out_size`` defaults to ``pad``)."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
        known = {f.name for f in dataclasses.fields(AugmentConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"augment has unknown keys {unknown}; known: {sorted(known)}")
        values.setdefault("out_size", self.pad)
        return AugmentConfig(**values)


@dataclass
class TrainConfig:
    """Everything a training run needs (see the module docstring for the file layout)."""

    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(synthetic=[SyntheticSource()]))
    seed: int = 0
    steps: int = 1000
    episodes_per_step: int = 4
    time_budget_minutes: float | None = None
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 10
    out_dir: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "episodes_per_step", "checkpoint_every", "keep_checkpoints", "log_every"):
            _positive(name, getattr(self, name))
        if self.time_budget_minutes is not None:
            _positive("time_budget_minutes", self.time_budget_minutes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def config_from_dict(data: dict[str, Any], base_dir: str | os.PathLike[str] | None = None,
                     source: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a parsed file; resolve relative paths against ``base_dir``.

    Raises
    ------
    ConfigError
        Unknown keys, wrong types or invalid values, prefixed with ``source``.
    """
    try:
        config = build_dataclass(TrainConfig, dict(data), "")
        if "data" not in data:
            raise ConfigError("config: no data source: add [[data.synthetic]] and/or [[data.folders]]")
        for index, synthetic in enumerate(config.data.synthetic):
            try:
                synthetic.scene_config()
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"data.synthetic[{index}].scene: {exc}") from None
        try:
            config.data.augment_config()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"data.augment: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if base_dir is not None:
        base = Path(base_dir)

        def resolve(path: str | None) -> str | None:
            return None if path is None else str(base / Path(path).expanduser())

        for folder in config.data.folders:
            folder.root = resolve(folder.root) or folder.root
            folder.manifest = resolve(folder.manifest)
            folder.exclude_splits = resolve(folder.exclude_splits)
        config.model = dataclasses.replace(config.model, init=resolve(config.model.init))
        config.out_dir = resolve(config.out_dir)
    return config


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a ``.toml`` or ``.json`` training configuration.

    Raises
    ------
    ConfigError
        Missing or unreadable file, syntax errors, unknown keys, wrong types or invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise ConfigError(f"{path}: reading TOML needs Python >= 3.11 or `pip install tomli`; "
                                  "or write the config as JSON") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    else:
        raise ConfigError(f"{path}: unknown config format {suffix!r}: use .toml or .json")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return config_from_dict(data, base_dir=path.parent, source=str(path))
