"""LR schedules by name, built from `torch.optim.lr_scheduler` (the maths is torch's, not ours).

Every schedule except `plateau` is stepped once per optimizer step (`scheduler.step()` after
`optimizer.step()`), over `total_steps` steps. `plateau` (ReduceLROnPlateau) is stepped once per
epoch with the validation metric: `scheduler.step(metric)`; `needs_metric(scheduler)` tells which.
"""

from __future__ import annotations

import inspect
import math
import numbers
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import lr_scheduler

Scheduler = lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau


def _constant(optimizer: torch.optim.Optimizer, total_steps: int) -> Scheduler:
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _step(
    optimizer: torch.optim.Optimizer, total_steps: int, step_size: int | None = None, gamma: float = 0.1
) -> Scheduler:
    return lr_scheduler.StepLR(optimizer, step_size=step_size or max(1, total_steps // 3), gamma=gamma)


def _multistep(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    milestones: list[int] | None = None,
    gamma: float = 0.1,
) -> Scheduler:
    milestones = milestones or [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
    return lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def _exponential(
    optimizer: torch.optim.Optimizer, total_steps: int, gamma: float | None = None, final_factor: float = 0.01
) -> Scheduler:
    _check_positive("final_factor", final_factor)
    return lr_scheduler.ExponentialLR(optimizer, gamma=gamma or final_factor ** (1 / total_steps))


def _cosine(optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float = 0.0) -> Scheduler:
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=eta_min)


def _warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.1,
    warmup_start_factor: float = 0.01,
    eta_min: float = 0.0,
) -> Scheduler:
    if not 0.0 < warmup_fraction < 1.0:
        raise ValueError(f"Invalid warmup_fraction: {warmup_fraction}; must be in (0, 1)")
    if not sys.float_info.min <= warmup_start_factor <= 1.0:
        raise ValueError(f"Invalid warmup_start_factor: {warmup_start_factor}; must be in (0, 1]")
    warmup_steps = max(1, round(warmup_fraction * total_steps))
    warmup = lr_scheduler.LinearLR(
        optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=warmup_steps
    )
    decay = lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min
    )
    return lr_scheduler.SequentialLR(optimizer, [warmup, decay], milestones=[warmup_steps])


def _onecycle(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    cycle_momentum: bool = False,
) -> Scheduler:
    # cycle_momentum is off by default: it would override the momentum/beta1 a sweep is tuning.
    max_lr = [float(group["lr"]) for group in optimizer.param_groups]
    return lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
    )


def _plateau(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    mode: str = "max",
    factor: float = 0.1,
    patience: int = 3,
    threshold: float = 1e-4,
    min_lr: float = 0.0,
) -> Scheduler:
    return lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold, min_lr=min_lr
    )


SCHEDULES: dict[str, Callable[..., Scheduler]] = {
    "constant": _constant,
    "step": _step,
    "multistep": _multistep,
    "exponential": _exponential,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
    "onecycle": _onecycle,
    "plateau": _plateau,
}


def names() -> list[str]:
    return list(SCHEDULES)


def check_name(name: str) -> str:
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    return name


def build(name: str, optimizer: torch.optim.Optimizer, total_steps: int, **kwargs: Any) -> Scheduler:
    """The schedule `name` for `optimizer` over `total_steps` optimizer steps (see module docstring)."""
    factory = SCHEDULES[check_name(name)]
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 1:
        raise ValueError(f"Invalid total_steps: {total_steps!r}; must be an integer >= 1")
    allowed = list(inspect.signature(factory).parameters)[2:]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown argument(s) {', '.join(unknown)} for schedule {name!r}; "
            f"valid: {', '.join(allowed) or 'none'}"
        )
    return factory(optimizer, int(total_steps), **kwargs)


def needs_metric(scheduler: Scheduler) -> bool:
    """True for schedules stepped once per epoch with a metric (ReduceLROnPlateau)."""
    return isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)


def _check_positive(name: str, value: float) -> None:
    if not 0 < value < math.inf:
        raise ValueError(f"Invalid {name}: {value}; must be a finite number > 0")
