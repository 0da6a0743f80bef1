"""The training loop: one loop for every scale (a plain process, a Tune trial, a Ray Train worker).

Where it runs is hidden behind a `Session` (see `sessions.py`): which rank it is, which device it
uses, how it reports metrics and checkpoints and where it finds the checkpoint to resume from.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import optimizers
from optimizers import schedules

from . import checkpoints, data, faults, models
from .config import TrainConfig

DIVERGED_LOSS = 1e9
"""Finite stand-in for a diverged run's losses: Tune's schedulers and searchers break on NaN."""


class Session(Protocol):
    """Where the loop runs; see `trainables.sessions` for the implementations."""

    rank: int
    world_size: int
    device: torch.device
    node_id: str

    def prepare_model(self, model: nn.Module) -> nn.Module: ...
    def latest_checkpoint(self) -> Any: ...  # sessions.Restored
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...
    def should_stop(self, epoch: int) -> bool: ...


@dataclass
class _Progress:
    epoch: int = 0
    best_val_acc: float = 0.0
    resumed_from_epoch: int | None = None  # set when this run continued from a checkpoint
    unusable_checkpoints: int = 0  # damaged checkpoints skipped on the way


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(config: TrainConfig, session: Session) -> dict[str, Any]:
    """Train `config` to the end (or until diverged or asked to stop); returns the last metrics."""
    seed_everything(config.seed)
    splits = data.load_splits(config.dataset, config.data_dir)
    model = models.build_model(config.model, splits.input_shape, splits.num_classes).to(session.device)
    model = session.prepare_model(model)
    train_loader = data.make_loader(
        splits.train,
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        rank=session.rank,
        world_size=session.world_size,
    )
    val_loader, test_loader = (
        data.make_loader(
            data.eval_shard(split, session.rank, session.world_size),
            config.batch_size,
            shuffle=False,
            seed=config.seed,
        )
        for split in (splits.val, splits.test)
    )
    optimizer = optimizers.build(config.optimizer, model.parameters(), **config.hparams)
    scheduler = schedules.build(config.schedule, optimizer, config.max_epochs * len(train_loader))
    use_amp = config.amp if config.amp is not None else session.device.type == "cuda"
    scaler = torch.amp.GradScaler(session.device.type, enabled=use_amp)
    progress = _Progress()
    _resume(session, model, optimizer, scheduler, scaler, progress)

    bound = config.divergence_bound(splits.num_classes)
    metrics: dict[str, Any] = {}
    start_epoch = progress.epoch + 1
    for epoch in range(start_epoch, config.max_epochs + 1):
        started = time.perf_counter()
        train_loader.set_epoch(epoch)
        lr = float(optimizer.param_groups[0]["lr"])  # in effect for this epoch's first step
        train_loss, samples = _train_epoch(
            model,
            train_loader,
            optimizer,
            scheduler,
            scaler,
            config,
            bound,
            on_first_batch=lambda e=epoch: faults.maybe_crash(session.rank, e),
        )
        elapsed = time.perf_counter() - started
        metrics = {
            **_resume_note(progress, first_epoch=epoch == start_epoch),
            "epoch": epoch,
            "lr": lr,
            "epoch_time_s": elapsed,
            "samples_per_s": samples * session.world_size / elapsed if elapsed > 0 else 0.0,
            "node_id": session.node_id,
        }
        if train_loss is None:  # diverged: finite sentinels, and the run ends here
            metrics |= {
                "train_loss": DIVERGED_LOSS,
                "val_loss": DIVERGED_LOSS,
                "val_acc": 0.0,
                "best_val_acc": progress.best_val_acc,
                "diverged": True,
            }
            session.report(metrics, None)
            return metrics

        # Evaluate the plain module (no DDP collectives: shards may differ in batch count) with rank 0's
        # BatchNorm statistics everywhere.
        _broadcast_buffers(model)
        val_loss, val_acc = evaluate(_unwrapped(model), val_loader, session.device, use_amp)
        if schedules.needs_metric(scheduler):
            scheduler.step(val_acc)
        progress.epoch = epoch
        progress.best_val_acc = max(progress.best_val_acc, val_acc)
        metrics |= {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "best_val_acc": progress.best_val_acc,
            "diverged": False,
        }
        # Every epoch, so that a trial the scheduler stops early still has a test accuracy; nothing
        # selects on it (configurations are chosen on validation accuracy).
        metrics["test_acc"] = evaluate(_unwrapped(model), test_loader, session.device, use_amp)[1]
        with tempfile.TemporaryDirectory(prefix="optsweep-ckpt-") as directory:
            state = (
                _training_state(model, optimizer, scheduler, scaler, progress) if session.rank == 0 else None
            )
            checkpoints.save(directory, state, session.rank, durable=False)  # a staging copy
            session.report(metrics, directory)
        if epoch < config.max_epochs and session.should_stop(epoch):
            break
    return metrics


def _train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: schedules.Scheduler,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    divergence_bound: float,
    on_first_batch: Callable[[], None] | None = None,
) -> tuple[float | None, int]:
    """(mean over batches of the rank-averaged training loss, or None if it diverged; samples seen)."""
    model.train()
    device = next(model.parameters()).device
    total, batches, samples = 0.0, 0, 0
    per_step_schedule = not schedules.needs_metric(scheduler)
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, scaler.is_enabled()):
            loss = F.cross_entropy(model(inputs), targets)
        # The mean over ranks, so that every rank takes the same decision (one returning alone would
        # leave the others waiting in DDP's gradient all-reduce).
        value = float(_all_reduce_sum(loss.detach().double()) / _world_size())
        if not math.isfinite(value) or value > divergence_bound:
            return None, samples
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if per_step_schedule:
            scheduler.step()
        if batches == 0 and on_first_batch is not None:
            on_first_batch()
        total += value
        batches += 1
        samples += len(targets)
    return total / max(batches, 1), samples


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device, use_amp: bool
) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole split, summed across ranks."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, use_amp):
            logits = model(inputs)
        sums[0] += F.cross_entropy(logits.float(), targets, reduction="sum")
        sums[1] += (logits.argmax(dim=1) == targets).sum()
        sums[2] += len(targets)
    loss, correct, count = _all_reduce_sum(sums).tolist()
    return loss / count, correct / count


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
    return tensor


def _broadcast_buffers(model: nn.Module) -> None:
    if _world_size() > 1:
        for buffer in _unwrapped(model).buffers():
            torch.distributed.broadcast(buffer, src=0)


def _resume_note(progress: _Progress, first_epoch: bool) -> dict[str, Any]:
    """On the first report after a restart: where it resumed from and how many damaged checkpoints it
    skipped (result.json keeps the record; the trial's log has the details)."""
    if not first_epoch or (progress.resumed_from_epoch is None and not progress.unusable_checkpoints):
        return {}
    return {
        "resumed_from_epoch": progress.resumed_from_epoch or 0,
        "unusable_checkpoints": progress.unusable_checkpoints,
    }


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _autocast(device: torch.device, enabled: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.float16) if enabled else nullcontext()


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: schedules.Scheduler,
    scaler: torch.amp.GradScaler,
    progress: _Progress,
) -> dict[str, Any]:
    return {
        "model": _unwrapped(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": progress.epoch,
        "best_val_acc": progress.best_val_acc,
    }


def _resume(
    session: Session,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: schedules.Scheduler,
    scaler: torch.amp.GradScaler,
    progress: _Progress,
) -> None:
    found = session.latest_checkpoint()
    progress.unusable_checkpoints = len(found.unusable)
    if found.state is None:
        return
    state, rng = found.state, found.rng
    progress.resumed_from_epoch = int(state["epoch"])
    _unwrapped(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    progress.epoch = int(state["epoch"])
    progress.best_val_acc = float(state["best_val_acc"])
    if rng is not None:
        checkpoints.restore_rng(rng)
