"""One flat, typed configuration for a training run (the nanoGPT habit: every knob in one place, logged
with the results, typos are errors).

A Tune trial's config is flat: `optimizer`, `seed`, `lr`, `weight_decay`, `schedule`, the optimizer's
other hyperparameters (`momentum`, `beta1`, ...) at the top level, and the fixed run settings under
`settings`. `TrainConfig.from_trial_config` turns that into a validated TrainConfig.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from optsweep import catalog, optimizers
from optsweep.optimizers import schedules

# Keys of a trial config that are not optimizer hyperparameters.
NON_HPARAM_KEYS = ("optimizer", "seed", "schedule", "settings")
MODES = catalog.MODES
"""Training modes: synchronous data parallelism, ZeRO-1 sharded optimizer state, asynchronous parameter
server."""


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    # The class behind a user's optimizer label ("my_pkg.opt:Lion"); None: `optimizer` is a registered name.
    optimizer_class: str | None = None
    hparams: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    schedule: str = "constant"
    seed: int = 0

    # What is trained: a built-in task name, "my_pkg.tasks:factory" or "path/to/file.py:factory"
    # (trainables.tasks.build_task), with the factory's keyword arguments.
    task: str = "digits"
    task_args: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    # None: the task's own defaults.
    max_epochs: int | None = None
    batch_size: int | None = None
    grad_clip: float | None = None
    # Mixed precision: None = on where it helps (CUDA), off on the CPU.
    amp: bool | None = None
    # A loss above this (or a non-finite one) ends the run as diverged; None = 100 x chance-level loss.
    divergence_loss: float | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2
    # Multi-worker trials under a sweep scheduler: the channel (trainables.decisions) on which to wait
    # after each epoch for the scheduler's decision, ending the run when it says stop.
    scheduler_decisions: str | None = None
    # How the workers train (see MODES): synchronous data parallelism, the same with the optimizer state
    # sharded across the workers (ZeRO-1, trainables.zero), or an asynchronous parameter server with
    # `workers` gradient workers (trainables.param_server).
    mode: str = "sync"
    # async-ps only: divide the lr of each update by the gradient's staleness (Zhang et al. 2016).
    staleness_aware_lr: bool = False
    # Experiments only: the last worker sleeps this long before each of its steps (an injected straggler).
    straggler_delay_s: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.task:
            raise ValueError("Invalid task: ''; give a task name or an import path")
        if self.optimizer_class is None:
            optimizers.optimizer_class(self.optimizer)
        schedules.check_name(self.schedule)
        for name in ("max_epochs", "batch_size", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"Invalid {name}: {getattr(self, name)}; must be an integer >= 1")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"Invalid cpus_per_worker: {self.cpus_per_worker}; must be > 0")
        if self.gpus_per_worker < 0:
            raise ValueError(f"Invalid gpus_per_worker: {self.gpus_per_worker}; must be >= 0")
        if self.max_failures < 0:
            raise ValueError(f"Invalid max_failures: {self.max_failures}; must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"Invalid grad_clip: {self.grad_clip}; must be > 0 (or None for no clipping)")
        if self.divergence_loss is not None and not self.divergence_loss > 0:
            raise ValueError(f"Invalid divergence_loss: {self.divergence_loss}; must be > 0")
        if self.mode not in MODES:
            raise ValueError(f"Invalid mode: {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.workers < catalog.MIN_WORKERS[self.mode]:
            raise ValueError(
                f"Invalid workers: {self.workers} with mode 'zero1'; sharding the optimizer state needs "
                "workers >= 2 (use mode 'sync' for one worker)"
            )
        if self.straggler_delay_s < 0:
            raise ValueError(f"Invalid straggler_delay_s: {self.straggler_delay_s}; must be >= 0")

    @classmethod
    def from_trial_config(cls, config: dict[str, Any]) -> TrainConfig:
        """Build from a flat Tune trial config (see module docstring)."""
        hparams = {
            key: value
            for key, value in config.items()
            if key not in NON_HPARAM_KEYS and not key.startswith("__")
        }
        settings = dict(config.get("settings", {}))
        unknown = sorted(set(settings) - set(cls.setting_names()))
        if unknown:
            raise ValueError(
                f"Unknown setting(s) {', '.join(unknown)}; valid: {', '.join(cls.setting_names())}"
            )
        return cls(
            optimizer=config.get("optimizer", cls.optimizer),
            hparams=hparams,
            schedule=config.get("schedule", cls.schedule),
            # Random search sets `seed`; Optuna's Repeater numbers the seeds of a configuration instead.
            seed=int(config.get("seed", config.get("__trial_index__", cls.seed))),
            **settings,
        )

    @classmethod
    def setting_names(cls) -> list[str]:
        """Fields that come from a trial config's `settings`."""
        return [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in ("optimizer", "hparams", "schedule", "seed")
        ]

    def divergence_bound(self, task_bound: float | None) -> float:
        """A training loss above this ends the run as diverged (a non-finite one always does)."""
        if self.divergence_loss is not None:
            return self.divergence_loss
        return task_bound if task_bound is not None else math.inf

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_types(config: TrainConfig) -> None:
    hints = get_type_hints(TrainConfig)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        allowed = _allowed_types(hints[f.name])
        if isinstance(value, bool) and bool not in allowed:
            ok = False
        elif isinstance(value, int) and float in allowed and int not in allowed:
            ok = True  # an int where a float is expected is fine
        else:
            ok = isinstance(value, allowed)
        if not ok:
            names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ValueError(f"Invalid {f.name}: {value!r} ({type(value).__name__}); must be {names}")


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if get_origin(hint) in (Union, types.UnionType):
        return tuple(t for arg in get_args(hint) for t in _allowed_types(arg))
    origin = get_origin(hint)
    return (origin,) if origin is not None else (hint,)
