"""The training loop: episodes → SINE → SetCriterion → AdamW, with checkpoints, resume and a log.

Each optimizer step draws ``episodes_per_step`` (reference, target) episodes from a
:class:`~sine_model.training.pairs.PairSampler`, encodes all their images in one batch, decodes every
target against its own reference (what :meth:`SINE.forward_raw` does per episode), and applies the
criterion to all episodes at once (the mask normaliser counts the matches of the whole step, as in
the official code). The recipe follows the reference notes §2.2: AdamW (lr 1e-4, weight decay 0.05,
none for ``nn.LayerNorm`` and ``nn.Embedding`` parameters), linear warmup then linear decay to 0 at
the last step, gradient clipping at 1.0.

Everything random — model initialisation, episode sampling (a numpy generator) and the loss's point
sampling (a torch generator) — is seeded from the configuration and saved in checkpoints, so on the
CPU a resumed run continues bit for bit as an uninterrupted one would.

Output folder: ``config.json``, ``log.jsonl`` and ``log.csv`` (one row every ``log_every`` steps:
step, lr, elapsed seconds, seconds per step, mean loss terms, gradient norm), ``checkpoints/step_N``
(:mod:`~sine_model.training.checkpoints`) and, at the end, ``model.safetensors``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from sine_model.engine.device import select_device
from sine_model.hub.training_export import META_TRAINED_MODEL
from sine_model.modeling.config import build_model
from sine_model.modeling.sine import SINE
from sine_model.training.checkpoints import (
    CheckpointState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from sine_model.training.config import DataConfig, LossConfig, ModelSection, TrainConfig
from sine_model.training.folders import folder_groups
from sine_model.training.losses import SetCriterion
from sine_model.training.pairs import Episode, PairConfig, PairSampler
from sine_model.training.synthetic import synthetic_groups

__all__ = [
    "Trainer",
    "TrainResult",
    "train",
    "build_model_for_training",
    "build_sampler",
    "build_criterion",
    "param_groups",
    "lr_at",
    "episode_losses",
]

LOG_TERMS = ("loss", "loss_ce_ins", "loss_ce_id", "loss_mask", "loss_dice", "loss_aux", "grad_norm")
LOG_COLUMNS = ("step", "lr", "seconds", "step_seconds", *LOG_TERMS)


class EpisodeSource(Protocol):
    def sample(self, rng: np.random.Generator | None = None) -> Episode: ...


def build_model_for_training(config: ModelSection) -> SINE:
    """The model of a ``[model]`` section: random weights, or ``config.init`` loaded strictly."""
    model = build_model(config.architecture())
    if config.init:
        if not Path(config.init).is_file():
            raise ValueError(f"model.init file {config.init} does not exist")
        try:
            model.load_state_dict(load_file(config.init))
        except RuntimeError as exc:
            raise ValueError(f"model.init {config.init} does not fit model.kind={config.kind!r}: "
                             f"{exc}") from None
    return model


def build_sampler(config: DataConfig) -> PairSampler:
    """One :class:`PairSampler` over all sources; each source's ``weight`` is shared by its groups."""
    groups: list[Sequence[Any]] = []
    weights: list[float] = []
    for source in config.synthetic:
        made = synthetic_groups(source.seed, source.scene_config(), source.n_groups, source.images_per_group)
        groups += made
        weights += [source.weight / len(made)] * len(made)
    for source in config.folders:
        found = folder_groups(source.root, source.manifest, include=source.include,
                              exclude=source.excluded_groups())
        groups += list(found.values())
        weights += [source.weight / len(found)] * len(found)
    pair_config = PairConfig(pad=config.pad, augment=config.augment_config(), crop_prob=config.crop_prob,
                             min_area=config.min_area)
    return PairSampler(groups, pair_config, seed=0, group_weights=weights)


def build_criterion(config: LossConfig) -> SetCriterion:
    """The :class:`SetCriterion` of a :class:`LossConfig`."""
    return SetCriterion(**asdict(config))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split as in the official recipe: no weight decay for the parameters of
    ``nn.LayerNorm`` and ``nn.Embedding`` modules, ``weight_decay`` for all others (LayerNorm2d,
    GroupNorm, ``temp`` and ``logit_scale`` included)."""
    decay, no_decay = [], []
    for module in model.modules():
        exempt = isinstance(module, (nn.LayerNorm, nn.Embedding))
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup to ``base_lr`` over
    ``warmup_steps`` steps, then linear decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    remaining = total_steps - step
    return base_lr * max(0.0, remaining / max(1, total_steps - warmup_steps))


def episode_losses(
    model: SINE,
    episodes: Sequence[Episode],
    criterion: SetCriterion,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Loss terms of a batch of episodes (all images encoded together, one decode per episode)."""
    images = torch.cat([torch.cat([e.ref_image, e.target]) for e in episodes]).to(device)
    features = model.encode_images(images)
    outputs, targets = [], []
    for k, e in enumerate(episodes):
        tokens = model.reference_tokens(features[2 * k : 2 * k + 1], [e.ref_masks.to(device)],
                                        [e.ref_labels.to(device)], [e.ref_ids.to(device)])
        outputs.append(model.decode(features[2 * k + 1 : 2 * k + 2], tokens, return_aux=True))
        targets.append({"masks": e.masks.to(device), "labels": e.labels.to(device), "ids": e.ids.to(device)})
    return criterion(outputs, targets, generator=generator)


@dataclass
class TrainResult:
    """Summary of :meth:`Trainer.run`: steps done, seconds, why it stopped, last logged losses."""

    step: int
    seconds: float
    stopped_by: str
    out_dir: Path
    last_log: dict[str, float] | None


class Trainer:
    """Train SINE from a :class:`TrainConfig`.

    Parameters
    ----------
    config : TrainConfig
        The run's settings.
    out_dir : str or os.PathLike, optional
        Output folder (default ``config.out_dir``, else ``outputs/train``).
    device : str or torch.device, optional
        Overrides ``config.device`` (``"auto"``: CUDA when present).
    sampler : object with ``sample(rng) -> Episode``, optional
        Episode source instead of the one built from ``config.data``.
    progress : bool
        Show a tqdm progress bar.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike[str] | None = None, *,
                 device: str | torch.device | None = None, sampler: EpisodeSource | None = None,
                 progress: bool = True) -> None:
        self.config = config
        self.out_dir = Path(out_dir or config.out_dir or "outputs/train")
        self.device = select_device(device or config.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = build_model_for_training(config.model).to(self.device)
        self.sampler = sampler if sampler is not None else build_sampler(config.data)
        self.criterion = build_criterion(config.loss)
        opt = config.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.model, opt.weight_decay), lr=opt.lr,
                                           betas=opt.betas, eps=opt.eps)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.step = 0
        self.seconds = 0.0
        self.progress = progress
        self._window: list[dict[str, float]] = []

    # -- one step -------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """Sample episodes, compute the losses and take one optimizer step; return the scalars."""
        self.model.train()
        opt = self.config.optim
        lr = lr_at(self.step, opt.lr, opt.warmup_steps, self.config.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        episodes = [self.sampler.sample(self.rng) for _ in range(self.config.episodes_per_step)]
        losses = episode_losses(self.model, episodes, self.criterion, self.device, self.generator)
        total = losses["total"]
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at step {self.step + 1}: {float(total)}")
        total.backward()
        clip = opt.grad_clip if opt.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        self.optimizer.step()
        self.step += 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        final = {k: v for k, v in values.items() if k in LOG_TERMS}
        aux = sum(v for k, v in values.items() if k[-1].isdigit())
        return {"lr": lr, "loss": values["total"], **final, "loss_aux": aux, "grad_norm": grad_norm}

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def _state(self) -> CheckpointState:
        return CheckpointState(
            step=self.step, seconds=self.seconds, numpy_rngs={"episodes": self.rng},
            torch_generators={"loss_points": self.generator},
            extra={"config": self.config.to_dict(), "torch": torch.__version__,
                   "schedule": {"kind": "warmup_linear_decay", "warmup_steps": self.config.optim.warmup_steps,
                                "total_steps": self.config.steps, "base_lr": self.config.optim.lr}},
        )

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step (keeping the newest ``keep_checkpoints``)."""
        return save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self._state(),
                               keep=self.config.keep_checkpoints)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore model, optimizer, step, seconds and all random generators from ``path``."""
        meta = load_checkpoint(path, self.model, self.optimizer, numpy_rngs={"episodes": self.rng},
                               torch_generators={"loss_points": self.generator})
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])
        saved = meta.get("config")
        if saved is not None and saved != self.config.to_dict():
            changed = sorted(k for k in saved if saved.get(k) != self.config.to_dict().get(k))
            print(f"note: resuming with a configuration that differs from the checkpoint's in {changed}",
                  file=sys.stderr)

    # -- logging --------------------------------------------------------------------------------

    def _truncate_logs(self) -> None:
        """Drop log rows written after the checkpoint being resumed from."""
        jsonl, csv_path = self.out_dir / "log.jsonl", self.out_dir / "log.csv"
        if jsonl.is_file():
            rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if r.get("step", 0) <= self.step]
            jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
            with open(csv_path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

    def _write_log(self, step_seconds: float) -> dict[str, float]:
        mean = {k: float(np.mean([w[k] for w in self._window if k in w])) for k in LOG_TERMS}
        row = {"step": self.step, "lr": self._window[-1]["lr"], "seconds": round(self.seconds, 3),
               "step_seconds": round(step_seconds, 4), **{k: round(v, 6) for k, v in mean.items()}}
        self._window.clear()
        with open(self.out_dir / "log.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        csv_path = self.out_dir / "log.csv"
        new = not csv_path.is_file()
        with open(csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        return row

    # -- the run --------------------------------------------------------------------------------

    def run(self, resume: bool | str | os.PathLike[str] = False, max_steps: int | None = None,
            on_log: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
        """Train until ``config.steps`` (or the time budget, or ``max_steps`` more steps).

        Parameters
        ----------
        resume : bool or path
            True: continue from the newest checkpoint in ``out_dir/checkpoints`` (start fresh when
            there is none); a path: continue from that checkpoint folder.
        max_steps : int, optional
            Stop after this many steps of this call (a checkpoint is written).
        on_log : callable, optional
            Called with every log row.

        Raises
        ------
        FileExistsError
            ``out_dir`` holds checkpoints and ``resume`` is False.
        KeyboardInterrupt
            Re-raised after saving a checkpoint of the last finished step.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            path = latest_checkpoint(self.checkpoint_dir) if resume is True else Path(resume)
            if path is None:
                print(f"note: no checkpoint in {self.checkpoint_dir}; starting from step 0", file=sys.stderr)
            else:
                self.load_checkpoint(path)
                self._truncate_logs()
        elif latest_checkpoint(self.checkpoint_dir) is not None:
            raise FileExistsError(f"{self.out_dir} already holds checkpoints: resume (--resume) or choose "
                                  "another output folder (--out)")
        if self.step == 0:
            for name in ("log.jsonl", "log.csv"):
                (self.out_dir / name).unlink(missing_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1))
        budget = None if self.config.time_budget_minutes is None else 60 * self.config.time_budget_minutes
        stop = self.config.steps if max_steps is None else min(self.config.steps, self.step + max_steps)
        last_log, stopped_by, saved_step = None, "steps", -1
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True)
        try:
            while self.step < stop:
                if budget is not None and self.seconds >= budget:
                    stopped_by = "time"
                    break
                start = time.perf_counter()
                self._window.append(self.train_step())
                step_seconds = time.perf_counter() - start
                self.seconds += step_seconds
                bar.update(1)
                bar.set_postfix(loss=f"{self._window[-1]['loss']:.3f}", lr=f"{self._window[-1]['lr']:.2e}")
                if self.step % self.config.log_every == 0 or self.step == stop:
                    last_log = self._write_log(step_seconds)
                    if on_log is not None:
                        on_log(last_log)
                if self.step % self.config.checkpoint_every == 0:
                    self.save_checkpoint()
                    saved_step = self.step
            if max_steps is not None and self.step < self.config.steps and stopped_by == "steps":
                stopped_by = "max_steps"
        except KeyboardInterrupt:
            if self.step != saved_step:
                path = self.save_checkpoint()
                print(f"\ninterrupted: saved {path}; continue with --resume", file=sys.stderr)
            raise
        finally:
            bar.close()
        if self.step != saved_step:
            self.save_checkpoint()
        if self.step >= self.config.steps or stopped_by == "time":
            self.export(self.out_dir / "model.safetensors")
        return TrainResult(self.step, self.seconds, stopped_by, self.out_dir, last_log)

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the model's weights as safetensors, with the model configuration in the metadata."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        meta = {"format": "pt", "step": str(self.step),
                META_TRAINED_MODEL: json.dumps(self.config.model.architecture().to_dict())}
        save_file(state, Path(path), metadata=meta)
        return Path(path)


def train(config: TrainConfig, out_dir: str | os.PathLike[str] | None = None, *,
          resume: bool | str | os.PathLike[str] = False, device: str | torch.device | None = None,
          progress: bool = True) -> TrainResult:
    """Build a :class:`Trainer` and run it (see :meth:`Trainer.run`)."""
    return Trainer(config, out_dir, device=device, progress=progress).run(resume=resume)
