"""Training checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A checkpoint is a folder ``step_NNNNNNN`` holding

* ``model.safetensors`` — the model's state dict;
* ``optimizer.safetensors`` — the optimizer's per-parameter state (``state.<index>.<name>``);
* ``rng.safetensors`` — torch RNG states (CPU, CUDA, and named generators such as the loss sampler);
* ``state.json`` — step, elapsed seconds, optimizer hyper-parameters and non-tensor state, numpy
  generator states, the schedule and the training configuration.

Folders are written under a temporary name and renamed, so a crash never leaves a half-written
checkpoint under a valid name; the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["CheckpointState", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints"]

PREFIX = "step_"


@dataclass
class CheckpointState:
    """Everything except the model and optimizer tensors.

    Attributes
    ----------
    step : int
        Optimizer steps completed.
    seconds : float
        Training time spent so far (summed over resumed runs).
    numpy_rngs : dict
        Name → ``np.random.Generator.bit_generator.state``.
    torch_generators : dict
        Name → ``torch.Generator`` to save/restore (states go to ``rng.safetensors``).
    extra : dict
        JSON-serialisable extras (schedule, configuration, library versions).
    """

    step: int
    seconds: float = 0.0
    numpy_rngs: dict[str, np.random.Generator] = field(default_factory=dict)
    torch_generators: dict[str, torch.Generator] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoint folders under ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and p.name[len(PREFIX):].isdigit() and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(
    folder: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: CheckpointState,
    keep: int = 3,
) -> Path:
    """Write checkpoint ``folder/step_<step>`` and delete all but the newest ``keep``.

    Returns
    -------
    pathlib.Path
        The checkpoint folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{state.step:07d}"
    tmp = folder / f".tmp_{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(model_state, tmp / "model.safetensors", metadata={"format": "pt", "step": str(state.step)})
    opt_tensors, opt_meta = _optimizer_split(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors", metadata={"format": "pt"})
    rng = {"torch.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch.cuda.{i}"] = s
    for name, generator in state.torch_generators.items():
        rng[f"generator.{name}"] = generator.get_state()
    save_file(rng, tmp / "rng.safetensors", metadata={"format": "pt"})
    meta = {
        "step": state.step,
        "seconds": state.seconds,
        "optimizer": opt_meta,
        "numpy_rngs": {name: g.bit_generator.state for name, g in state.numpy_rngs.items()},
        **state.extra,
    }
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    numpy_rngs: Mapping[str, np.random.Generator] | None = None,
    torch_generators: Mapping[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` into existing objects (in place).

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint folder.
    model : nn.Module
        Loaded strictly.
    optimizer : torch.optim.Optimizer, optional
        Built over the same parameters in the same order.
    numpy_rngs, torch_generators : mapping, optional
        Generators to restore by name (the global torch RNG states are always restored).

    Returns
    -------
    dict
        The content of ``state.json`` (``step``, ``seconds`` and the extras).

    Raises
    ------
    ValueError
        A missing file or a checkpoint that does not match the objects.
    """
    path = Path(path)
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"):
        if not (path / name).is_file():
            raise ValueError(f"{path} is not a complete checkpoint: {name} is missing")
    meta = json.loads((path / "state.json").read_text())
    device = next(iter(model.parameters())).device
    try:
        model.load_state_dict(load_file(path / "model.safetensors", device=str(device)))
    except RuntimeError as exc:
        raise ValueError(f"{path}: the model does not match this configuration: {exc}") from None
    if optimizer is not None:
        tensors = load_file(path / "optimizer.safetensors")  # load_state_dict moves them to the params
        try:
            optimizer.load_state_dict(_optimizer_join(tensors, meta["optimizer"]))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}: the optimizer state does not match: {exc}") from None
    rng = load_file(path / "rng.safetensors")
    torch.set_rng_state(rng["torch.cpu"])
    cuda_keys = [k for k in rng if k.startswith("torch.cuda.")]
    cuda = [rng[k] for k in sorted(cuda_keys, key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    for name, generator in (torch_generators or {}).items():
        if f"generator.{name}" not in rng:
            raise ValueError(f"{path}: no state for the torch generator {name!r}")
        generator.set_state(rng[f"generator.{name}"])
    for name, generator in (numpy_rngs or {}).items():
        if name not in meta.get("numpy_rngs", {}):
            raise ValueError(f"{path}: no state for the numpy generator {name!r}")
        generator.bit_generator.state = meta["numpy_rngs"][name]
    return meta
