"""A prepared :class:`~sine_model.engine.propagator.Propagator`'s references, as one object to ship elsewhere.

Distributed runs compute the references once (encoding, calibration, a fitted refiner) and send the
result to every worker: :func:`capture` takes everything the engine derived from the references and its
options; :func:`restore` installs it into a propagator built on the same model weights elsewhere. The
model's weights are not part of it (workers load them from their file); :func:`model_fingerprint` lets a
worker check that its model equals the one the references were prepared with (an adapted model does not).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sine_model.engine.feature_cache import content_key

__all__ = ["EngineSettings", "ReferenceState", "capture", "model_fingerprint", "refiner_fingerprint",
           "restore"]

_PRECISIONS = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
#: Propagator attributes derived from the references (set_references, calibration, refiner fitting).
_DERIVED = ("_tokens", "_reference", "_min_area", "_instance_steps", "_calibrated_steps", "_projection",
            "_ref_labels", "refiner", "_ref_ndim", "_ref_channels", "_id_objects")


@dataclass(frozen=True)
class EngineSettings:
    """The options of a :class:`~sine_model.engine.propagator.Propagator` that shape its results."""

    pad: int
    scale: float
    tile_overlap: int
    batch_size: int | None  # None: automatic (per-target batches)
    thresholds: dict[str, float]
    channel_axis: int | None
    dense_refinement: int
    instance_source: str
    project_inputs: bool
    precision: str

    def build(self, model: Any, device: str | torch.device | None = None, cache_bytes: int = 1 << 30) -> Any:
        """A propagator with these options on ``model`` (references still to be restored)."""
        from sine_model.engine.propagator import Propagator

        return Propagator(model, device, self.precision, pad=self.pad, scale=self.scale,
                          tile_overlap=self.tile_overlap, batch_size=self.batch_size, cache_bytes=cache_bytes,
                          score_thresholds=self.thresholds, channel_axis=self.channel_axis,
                          dense_refinement=self.dense_refinement, instance_source=self.instance_source,
                          project_inputs=self.project_inputs)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for a run manifest."""
        return dataclasses.asdict(self)


@dataclass
class ReferenceState:
    """Everything a propagator derived from its references, plus its settings and model fingerprint."""

    settings: EngineSettings
    derived: dict[str, Any]
    model_fingerprint: str


def model_fingerprint(model: torch.nn.Module) -> str:
    """A digest of the start of every parameter and buffer (catches adapted or swapped weights)."""
    tensors = [t.detach().float().flatten()[:4096].cpu() for t in model.state_dict().values() if t.numel()]
    return content_key(torch.cat(tensors)) if tensors else "parameter-free"


def refiner_fingerprint(refiner: Any) -> str:
    """:func:`model_fingerprint` of a fitted refiner's MLP and, when it has one, a digest of its random
    forest's split thresholds and leaf values (``PixelRefiner.set_forest``)."""
    mlp = model_fingerprint(refiner)
    forest = getattr(refiner, "forest", None)
    if forest is None:
        return mlp
    trees = [np.concatenate([tree.tree_.threshold, tree.tree_.value.ravel()]) for tree in forest.estimators_]
    return f"{mlp}+forest:{content_key(np.concatenate(trees))}"


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, torch.nn.Module):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _to(getattr(value, f.name), device) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **fields)
    return value


def capture(propagator: Any) -> ReferenceState:
    """The references, calibration and refiner of a prepared ``propagator`` (on the CPU, copied)."""
    propagator._require_references()
    if propagator.instance_source == "semantic":
        propagator.instance_steps()  # chosen on the references now, once, not on every worker
    settings = EngineSettings(
        pad=propagator.pad, scale=propagator.scale, tile_overlap=propagator._overlap,
        batch_size=None if propagator._per_target_batches else propagator.batch_size,
        thresholds=dict(propagator.thresholds),
        channel_axis=propagator.channel_axis, dense_refinement=propagator.dense_refinement,
        instance_source=propagator.instance_source, project_inputs=propagator.project_inputs,
        precision=_PRECISIONS.get(propagator.autocast_dtype, "fp32"),
    )
    cpu = torch.device("cpu")
    derived = {name: _to(copy.deepcopy(getattr(propagator, name)), cpu) for name in _DERIVED}
    return ReferenceState(settings, derived, model_fingerprint(propagator.model))


def restore(propagator: Any, state: ReferenceState) -> None:
    """Install ``state``'s references into ``propagator`` (same settings and model weights required).

    Raises
    ------
    ValueError
        When ``propagator``'s model differs from the one the references were prepared with.
    """
    found = model_fingerprint(propagator.model)
    if found != state.model_fingerprint:
        raise ValueError("this model's weights differ from those the references were prepared with (an "
                         "adapted model cannot be shipped by its weights file): load the same weights, "
                         "or run without adaptation")
    for name, value in state.derived.items():
        setattr(propagator, name, _to(copy.deepcopy(value), propagator.device))
