"""Fused trials: K configurations and seeds of one task trained at once in one process.

Each member is a `TrainConfig` that could run alone through `trainables.loop.train`; fused, it keeps
everything that run would have: its initial weights (its seed), its data order (its seed's shuffle,
the very `ShardedLoader` order), its optimizer hyperparameters and LR schedule, its divergence check
and its per-epoch metrics under the same keys. The members share one vmapped forward/backward
(`fused_model.FusedModel`; the loss is the sum of the members' mean losses, so each member's gradient
is its own) and one optimizer step (`optimizers.members.FusedOptimizer`: each member's scalars through
the optimizer's own formulas). A member that diverges is frozen and reported diverged; the others go on.

What must be equal within a group (`check_configs`): the task and its arguments, the budget (epochs,
batch size), gradient clipping, the divergence bound, the optimizer and its code-path switches. Not
fused (refused with one line): multi-worker modes, mixed precision (amp=True; with amp=None fused
members train in full precision, where the unfused loop turns AMP on on CUDA), user optimizer classes,
LAMB and LARS (per-tensor trust ratios), models whose forward does not run under vmap. Not yet:
checkpoints and resume, compiled steps.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from optimizers import members as fused_members
from optimizers import schedules
from optsweep import vocabulary as v

from . import data, optimizer_choice
from .config import TrainConfig
from .fused_model import FusedModel, UnfusableModelError
from .loop import DIVERGED_LOSS, seed_everything
from .tasks import LOSS_METRIC, Task, build_task, param_groups

__all__ = ["FusedMember", "UnfusableModelError", "check_configs", "train_fused"]

# Settings every member of a group shares (they shape the group's batches and steps).
_SHARED_SETTINGS = (
    "optimizer",
    "optimizer_class",
    "task",
    "task_args",
    "data_dir",
    "max_epochs",
    "batch_size",
    "grad_clip",
    "divergence_loss",
)


@dataclass
class FusedMember:
    """One member's outcome: its configuration, its per-epoch reports (the keys of an unfused trial's)
    and its status (`completed` or `diverged`)."""

    config: TrainConfig
    reports: list[dict[str, Any]] = field(default_factory=list)
    status: str = v.COMPLETED


def check_configs(configs: Sequence[TrainConfig]) -> None:
    """Refuse, with one line, configurations that cannot train as one fused group."""
    if not configs:
        raise ValueError("a fused group needs at least one configuration")
    first = configs[0]
    for config in configs:
        if config.mode != "sync" or config.workers != 1:
            raise ValueError(
                f"fused trials run one process each: mode {config.mode!r} with {config.workers} worker(s) "
                "cannot be fused (use mode 'sync' and workers 1)"
            )
        if config.amp:
            raise ValueError("fused trials train in full precision: amp=True cannot be fused (use amp=False)")
        if config.optimizer_class is not None:
            raise ValueError(
                f"optimizer {config.optimizer_class!r} is a user class: only optsweep's optimizers "
                "take per-member hyperparameters"
            )
        for name in _SHARED_SETTINGS:
            if getattr(config, name) != getattr(first, name):
                raise ValueError(
                    f"fused members must share {name}: {getattr(first, name)!r} vs {getattr(config, name)!r}"
                )


def train_fused(
    configs: Sequence[TrainConfig],
    task: Task | None = None,
    device: torch.device | None = None,
    report: Callable[[int, dict[str, Any]], None] | None = None,
    node_id: str = "local",
) -> list[FusedMember]:
    """Train `configs` as one fused group to the end; each member's reports equal (within float
    rounding) those of `loop.train(config, sessions.LocalSession())`. `report(member, metrics)` is
    called with each member's metrics every epoch. Raises a one-line ValueError (UnfusableModelError
    for the model, optimizers.members.FusionError for the optimizer) when the group cannot be fused."""
    check_configs(configs)
    first = configs[0]
    if task is None:
        task = build_task(first.task, first.task_args, data_dir=first.data_dir)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = task.target
    batch_size = first.batch_size or task.batch_size
    max_epochs = first.max_epochs or task.max_epochs
    count = len(configs)
    splits, models = _member_models(task, [c.seed for c in configs], device)
    train_loaders = [data.make_loader(splits.train, batch_size, shuffle=True, seed=c.seed) for c in configs]
    probe_x, probe_y = next(iter(train_loaders[0]))
    FusedModel.check(models[0], probe_x.to(device), probe_y.to(device), task.loss)
    model = FusedModel(models)
    eval_loaders = {
        prefix: data.make_loader(split, batch_size, shuffle=False, seed=first.seed)
        for prefix, split in ((v.VAL_PREFIX, splits.val), (v.TEST_PREFIX, splits.test))
        if split is not None
    }
    optimizer = _fused_optimizer(models[0], model, task, configs)
    total_steps = max_epochs * len(train_loaders[0])
    schedulers = [
        schedules.build(
            c.schedule, member, total_steps, **({"mode": target.mode} if c.schedule == "plateau" else {})
        )
        for c, member in zip(configs, optimizer.members, strict=True)
    ]
    bound = first.divergence_bound(task.divergence_loss)
    outcomes = [FusedMember(config=c) for c in configs]
    best = [math.nan] * count
    for epoch in range(1, max_epochs + 1):
        active = [k for k in range(count) if outcomes[k].status == v.COMPLETED]
        if not active:
            break
        for loader in train_loaders:
            loader.set_epoch(epoch)
        lrs = [float(member.param_groups[0]["lr"]) for member in optimizer.members]
        started = time.perf_counter()
        epoch_run = _train_epoch(
            model, optimizer, schedulers, train_loaders, task, bound, device, active, first.grad_clip
        )
        elapsed = time.perf_counter() - started
        evaluated = _evaluate(model, eval_loaders, task, device)
        for k in active:
            seconds = epoch_run.diverged_after_s.get(k, elapsed)
            samples = epoch_run.samples[k]
            metrics: dict[str, Any] = {
                v.EPOCH: epoch,
                v.LR: lrs[k],
                v.EPOCH_TIME_S: seconds,
                v.SAMPLES_PER_S: samples / seconds if seconds > 0 else 0.0,
                v.NODE_ID: node_id,
            }
            if k in epoch_run.diverged_after_s:
                outcomes[k].status = v.DIVERGED
                metrics |= {
                    v.TRAIN_LOSS: DIVERGED_LOSS,
                    v.VAL_LOSS: DIVERGED_LOSS,
                    target.key: target.worst,
                    target.best_key: _finite_or(best[k], target.worst),
                    v.DIVERGED_FLAG: True,
                }
            else:
                score = evaluated[k][target.key]
                if schedules.needs_metric(schedulers[k]):
                    schedulers[k].step(score)
                if math.isnan(best[k]) or target.better(score, best[k]):
                    best[k] = score
                metrics |= {
                    v.TRAIN_LOSS: epoch_run.train_loss[k],
                    **evaluated[k],
                    target.best_key: _finite_or(best[k], target.worst),
                    v.DIVERGED_FLAG: False,
                }
            outcomes[k].reports.append(metrics)
            if report is not None:
                report(k, metrics)
    return outcomes


def _member_models(
    task: Task, seeds: Sequence[int], device: torch.device
) -> tuple[Any, list[torch.nn.Module]]:
    """The task's splits and each member's model, initialised as `loop.train` initialises it: seeded,
    then the data built (which may draw random numbers), then the model."""
    models = []
    splits = None
    rebuild = True
    for seed in seeds:
        seed_everything(seed)
        if rebuild:
            splits = task.data()
            # Data whose building draws no random numbers is built once for all members; otherwise
            # each member rebuilds it so that its model starts from the random state it has unfused.
            rebuild = _rng_state() != _seeded_state(seed)
        models.append(task.model().to(device))
    return splits, models


def _rng_state() -> tuple[Any, ...]:
    numpy_state = np.random.get_state()
    return (
        torch.random.get_rng_state().numpy().tobytes(),
        random.getstate(),
        numpy_state[1].tobytes(),
        numpy_state[2:],
    )


def _seeded_state(seed: int) -> tuple[Any, ...]:
    """The random state right after seed_everything(seed) (the present state is kept)."""
    saved = (torch.random.get_rng_state(), random.getstate(), np.random.get_state())
    seed_everything(seed)
    state = _rng_state()
    torch.random.set_rng_state(saved[0])
    random.setstate(saved[1])
    np.random.set_state(saved[2])
    return state


def _fused_optimizer(
    template: torch.nn.Module, model: FusedModel, task: Task, configs: Sequence[TrainConfig]
) -> fused_members.FusedOptimizer:
    """The task's param groups (e.g. no decay on biases) over the stacked parameters, and one optimizer
    per member over placeholders holding that member's hyperparameters."""
    names = {id(p): name for name, p in template.named_parameters()}
    groups = [
        {**group, "params": [model.params[names[id(p)]] for p in group["params"]]}
        for group in param_groups(template, task.weight_decay)
    ]
    members = [
        optimizer_choice.build(c.optimizer, fused_members.placeholder_groups(groups), c.hparams)
        for c in configs
    ]
    return fused_members.FusedOptimizer(groups, members)


@dataclass
class _EpochRun:
    train_loss: dict[int, float]
    samples: dict[int, int]
    diverged_after_s: dict[int, float]  # members that diverged this epoch: seconds until then


def _train_epoch(
    model: FusedModel,
    optimizer: fused_members.FusedOptimizer,
    schedulers: Sequence[schedules.Scheduler],
    loaders: Sequence[data.ShardedLoader],
    task: Task,
    bound: float,
    device: torch.device,
    active: Sequence[int],
    grad_clip: float | None,
) -> _EpochRun:
    model.train()
    started = time.perf_counter()
    live = list(active)
    totals = dict.fromkeys(live, 0.0)
    samples = dict.fromkeys(live, 0)
    diverged: dict[int, float] = {}
    batches = 0
    for inputs, targets in _member_batches(loaders):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        losses = model.losses(inputs, targets, task.loss)
        values = losses.detach().double().cpu().tolist()
        for k in list(live):
            if not math.isfinite(values[k]) or values[k] > bound:  # as loop.train: before its step
                diverged[k] = time.perf_counter() - started
                live.remove(k)
                optimizer.freeze(k)
                model.freeze(k)
        if not live:
            model.restore_frozen()
            break
        optimizer.zero_grad()
        losses.sum().backward()
        if grad_clip is not None:
            _clip_each_member(optimizer.params, grad_clip)
        optimizer.step()
        # A frozen member's forward still moves its BatchNorm statistics; put them back only after the
        # backward pass (which may read the buffers it saved).
        model.restore_frozen()
        for k in live:
            if not schedules.needs_metric(schedulers[k]):
                schedulers[k].step()
            totals[k] += values[k]
            samples[k] += targets.shape[1]
        batches += 1
    optimizer.zero_grad()
    return _EpochRun(
        train_loss={k: totals[k] / max(batches, 1) for k in live},
        samples=samples,
        diverged_after_s=diverged,
    )


@torch.no_grad()
def _clip_each_member(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_` for each member: each member's gradients scaled so that their
    total norm (over all its tensors) is at most `max_norm`."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    count = grads[0].shape[0]
    per_tensor = torch.stack([g.reshape(count, -1).norm(dim=1) for g in grads], dim=1)  # [K, tensors]
    total = per_tensor.norm(dim=1)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(count, *([1] * (grad.ndim - 1))))


def _member_batches(loaders: Sequence[data.ShardedLoader]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The members' batches stacked, ``[K, B, ...]``: member k's i-th batch is loader k's i-th batch.
    In-memory datasets are indexed once per step with every member's indices (the loaders' samplers
    give the order), others go through each member's loader."""
    first = loaders[0]
    if not isinstance(first.dataset, TensorDataset) or first.drop_last:
        for batch in zip(*loaders, strict=True):
            yield torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        return
    inputs, targets = first.dataset.tensors
    order = torch.tensor([list(loader.sampler) for loader in loaders], dtype=torch.long)
    for start in range(0, order.shape[1], first.batch_size):
        batch = order[:, start : start + first.batch_size]
        yield inputs[batch], targets[batch]


@torch.no_grad()
def _evaluate(
    model: FusedModel, loaders: dict[str, data.ShardedLoader], task: Task, device: torch.device
) -> list[dict[str, float]]:
    """Every member's metrics on every evaluation split, computed as `loop.evaluate` computes them: one
    vmapped forward, then each member's loss and metrics by the same calls (in float32, as the loop
    does, so a batched reduction would round differently)."""
    model.eval()
    names = list(task.metrics)
    count = model.num_members
    results: list[dict[str, float]] = [{} for _ in range(count)]
    for prefix, loader in loaders.items():
        sums = torch.zeros(count, 2 * (1 + len(names)), dtype=torch.float64, device=device)
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            outputs = model.outputs(inputs).float()
            examples = len(targets)
            for k in range(count):
                sums[k, 0] += task.loss(outputs[k], targets).double() * examples
                sums[k, 1] += examples
                for i, name in enumerate(names, start=1):
                    values = task.metrics[name].values(outputs[k], targets)
                    sums[k, 2 * i] += values.double().sum()
                    sums[k, 2 * i + 1] += values.numel()
        totals = sums.tolist()
        for k in range(count):
            means = [totals[k][2 * i] / max(totals[k][2 * i + 1], 1) for i in range(1 + len(names))]
            results[k][prefix + LOSS_METRIC] = means[0]
            for i, name in enumerate(names, start=1):
                results[k][prefix + name] = task.metrics[name].report(means[i])
    return results


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default
