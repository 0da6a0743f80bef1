"""The training loop: one loop for every scale (a plain process, a Tune trial, a Ray Train worker).

Where it runs is hidden behind a `Session` (see `sessions.py`): which rank it is, which device it
uses, how it reports metrics and checkpoints and where it finds the checkpoint to resume from.
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from optsweep import vocabulary as v
from optsweep.optimizers import schedules

from . import checkpoints, data, faults, optimizer_choice, zero
from .config import TrainConfig
from .tasks import LOSS_METRIC, Task, build_task, param_groups

DIVERGED_LOSS = v.DIVERGED_VALUE
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
    best: float = math.nan  # the best target value so far
    resumed_from_epoch: int | None = None  # set when this run continued from a checkpoint
    unusable_checkpoints: int = 0  # damaged checkpoints skipped on the way


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(
    config: TrainConfig,
    session: Session,
    task: Task | None = None,
    optimizer_class: type[torch.optim.Optimizer] | None = None,
) -> dict[str, Any]:
    """Train `config` to the end (or until diverged or asked to stop); returns the last metrics.

    `task` is what is trained; None builds `config.task` with `config.task_args`. `optimizer_class` is a
    user's optimizer given as a class; None resolves `config.optimizer_class` or `config.optimizer`.
    """
    if task is None:
        task = build_task(config.task, config.task_args, data_dir=config.data_dir)
    target = task.target
    batch_size = config.batch_size or task.batch_size
    max_epochs = config.max_epochs or task.max_epochs
    seed_everything(config.seed)
    splits = task.data()
    model = task.model().to(session.device)
    model = session.prepare_model(model)
    train_loader = data.make_loader(
        splits.train,
        batch_size,
        shuffle=True,
        seed=config.seed,
        rank=session.rank,
        world_size=session.world_size,
    )
    eval_loaders = {
        prefix: data.make_loader(
            data.eval_shard(split, session.rank, session.world_size),
            batch_size,
            shuffle=False,
            seed=config.seed,
        )
        for prefix, split in ((v.VAL_PREFIX, splits.val), (v.TEST_PREFIX, splits.test))
        if split is not None
    }
    groups = param_groups(_unwrapped(model), task.weight_decay)

    def build_optimizer(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return optimizer_choice.build(
            config.optimizer_class or config.optimizer, groups, config.hparams, cls=optimizer_class
        )

    # zero1: each worker keeps the optimizer state of its shard of the parameters (trainables.zero).
    optimizer = (
        zero.ShardedOptimizer(groups, build_optimizer) if config.mode == "zero1" else build_optimizer(groups)
    )
    schedule_options = {"mode": target.mode} if config.schedule == "plateau" else {}
    total_steps = max_epochs * len(train_loader)
    scheduler = schedules.build(config.schedule, optimizer, total_steps, **schedule_options)
    use_amp = config.amp if config.amp is not None else session.device.type == "cuda"
    scaler = torch.amp.GradScaler(session.device.type, enabled=use_amp)
    progress = _Progress()
    _resume(session, model, optimizer, scheduler, scaler, progress)

    bound = config.divergence_bound(task.divergence_loss)
    metrics: dict[str, Any] = {}
    start_epoch = progress.epoch + 1
    for epoch in range(start_epoch, max_epochs + 1):
        started = time.perf_counter()
        train_loader.set_epoch(epoch)
        lr = float(optimizer.param_groups[0]["lr"])  # in effect for this epoch's first step
        train_loss, samples = _train_epoch(
            model,
            train_loader,
            task,
            optimizer,
            scheduler,
            scaler,
            config,
            bound,
            on_first_batch=lambda e=epoch: faults.maybe_crash(session.rank, e),
            delay_s=config.straggler_delay_s if session.rank == session.world_size - 1 else 0.0,
        )
        elapsed = time.perf_counter() - started
        metrics = {
            **_resume_note(progress, first_epoch=epoch == start_epoch),
            v.EPOCH: epoch,
            v.LR: lr,
            v.EPOCH_TIME_S: elapsed,
            v.SAMPLES_PER_S: samples * session.world_size / elapsed if elapsed > 0 else 0.0,
            v.NODE_ID: session.node_id,
        }
        reason = training_diverged(epoch, bound) if train_loss is None else None
        if reason is None:
            # Evaluate the plain module (no DDP collectives: shards may differ in batch count) with rank
            # 0's BatchNorm statistics everywhere. Test metrics every epoch, so that a trial the scheduler
            # stops early still has them; nothing selects on them (configurations are chosen on validation).
            _broadcast_buffers(model)
            evaluated: dict[str, float] = {}
            for prefix, loader in eval_loaders.items():
                for name, value in evaluate(_unwrapped(model), loader, task, session.device, use_amp).items():
                    evaluated[prefix + name] = value
            reason = nonfinite_validation(evaluated, target, epoch)
        if reason is not None:  # diverged in training, or NaN on validation: sentinels, and the run ends
            print(f"diverged: {reason}", file=sys.stderr, flush=True)  # in the trial's log
            metrics |= diverged_metrics(target, progress.best, reason)
            session.report(metrics, None)
            return metrics

        score = evaluated[target.key]
        if schedules.needs_metric(scheduler):
            scheduler.step(score)
        progress.epoch = epoch
        if math.isnan(progress.best) or target.better(score, progress.best):
            progress.best = score
        metrics |= {
            v.TRAIN_LOSS: train_loss,
            **evaluated,
            target.best_key: _finite_or(progress.best, target.worst),
            v.DIVERGED_FLAG: False,
        }
        with tempfile.TemporaryDirectory(prefix="optsweep-ckpt-") as directory:
            # A sharded optimizer consolidates its state collectively: every rank takes part.
            optimizer_state = (
                optimizer.state_dict()
                if session.rank == 0 or isinstance(optimizer, zero.ShardedOptimizer)
                else None
            )
            state = (
                _training_state(model, optimizer_state, scheduler, scaler, progress)
                if session.rank == 0
                else None
            )
            checkpoints.save(directory, state, session.rank, durable=False)  # a staging copy
            session.report(metrics, directory)
        if epoch < max_epochs and session.should_stop(epoch):
            break
    return metrics


def _train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    task: Task,
    optimizer: torch.optim.Optimizer,
    scheduler: schedules.Scheduler,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    divergence_bound: float,
    on_first_batch: Callable[[], None] | None = None,
    delay_s: float = 0.0,
) -> tuple[float | None, int]:
    """(mean over batches of the rank-averaged training loss, or None if it diverged; samples seen).
    `delay_s`: sleep this long before each step (an injected straggler)."""
    model.train()
    device = next(model.parameters()).device
    total, batches, samples = 0.0, 0, 0
    per_step_schedule = not schedules.needs_metric(scheduler)
    for inputs, targets in loader:
        if delay_s:
            time.sleep(delay_s)
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, scaler.is_enabled()):
            loss = task.loss(model(inputs), targets)
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
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    task: Task,
    device: torch.device,
    use_amp: bool,
) -> dict[str, float]:
    """Every metric of `task` (the loss first) over the whole split, exact across batches and ranks:
    the loss is averaged over examples, each metric over its per-element values."""
    model.eval()
    names = list(task.metrics)
    # Per entry: sum and count; entry 0 is the loss (weighted by examples), then one per metric.
    sums = torch.zeros(2 * (1 + len(names)), dtype=torch.float64, device=device)
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, use_amp):
            outputs = model(inputs)
        outputs = outputs.float()
        examples = len(targets)
        sums[0] += task.loss(outputs, targets).double() * examples
        sums[1] += examples
        for i, name in enumerate(names, start=1):
            values = task.metrics[name].values(outputs, targets)
            sums[2 * i] += values.double().sum()
            sums[2 * i + 1] += values.numel()
    totals = _all_reduce_sum(sums).tolist()
    means = [totals[2 * i] / max(totals[2 * i + 1], 1) for i in range(1 + len(names))]
    result = {LOSS_METRIC: means[0]}
    for i, name in enumerate(names, start=1):
        result[name] = task.metrics[name].report(means[i])
    return result


def training_diverged(epoch: int, bound: float) -> str:
    """Why a run diverged in training (see `_train_epoch`), for its result's `diverged_reason`."""
    return f"train_loss was not finite or above the divergence bound {bound:g} in epoch {epoch}"


def nonfinite_validation(evaluated: dict[str, float], target: v.Target, epoch: int) -> str | None:
    """Why an epoch's validation must count as diverged: its loss or target metric is NaN or infinite
    (training stayed finite, but the model's outputs on the validation split, or the task's metric, did
    not). None when both are finite."""
    for key in (v.VAL_LOSS, target.key):
        value = evaluated.get(key)
        if value is not None and not math.isfinite(value):
            return f"{key} is {value} at epoch {epoch}"
    return None


def diverged_metrics(target: v.Target, best: float, reason: str) -> dict[str, Any]:
    """A diverged epoch's result: finite sentinels (Tune's schedulers break on NaN; the analysis reads
    them back as NaN), the best value before it, the flag and the reason. The run ends there."""
    return {
        v.TRAIN_LOSS: DIVERGED_LOSS,
        v.VAL_LOSS: DIVERGED_LOSS,
        target.key: target.worst,
        target.best_key: _finite_or(best, target.worst),
        v.DIVERGED_FLAG: True,
        v.DIVERGED_REASON: reason,
    }


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


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
    optimizer_state: dict[str, Any] | None,
    scheduler: schedules.Scheduler,
    scaler: torch.amp.GradScaler,
    progress: _Progress,
) -> dict[str, Any]:
    return {
        "model": _unwrapped(model).state_dict(),
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": progress.epoch,
        "best": progress.best,
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
    # Checkpoints from before tasks kept the best validation accuracy.
    progress.best = float(state["best"] if "best" in state else state["best_val_acc"])
    if rng is not None:
        checkpoints.restore_rng(rng)
