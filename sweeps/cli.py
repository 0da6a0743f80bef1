"""Command-line arguments of a study, validated before Ray starts: a mistake costs one clear line."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, NoReturn

import optimizers
from optimizers import schedules
from trainables import data, decisions, models

from . import spaces

DEFAULT_STORAGE = "optsweep_results"
SMOKE = {"num_samples": 2, "seeds": 1, "max_epochs": 2}
"""`--smoke`: a tiny version of the study (flags given explicitly still win)."""

MAX_NAME_LENGTH = 200  # a directory name; file systems allow 255 bytes
URI_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://")


class UsageError(ValueError):
    """A bad command-line value; the message is the one line the user sees."""


@dataclass(frozen=True)
class StudyArgs:
    """Everything a study run needs; also written to <experiment>/study.json."""

    name: str
    optimizers: tuple[str, ...] = ("sgd", "adam", "adamw")
    num_samples: int = 16
    seeds: int = 3
    max_epochs: int = 20
    dataset: str = "digits"
    model: str = "mlp"
    batch_size: int = 64
    schedules: tuple[str, ...] = spaces.SCHEDULES
    lr_min: float | None = None
    lr_max: float | None = None
    scheduler: str = "asha"
    search: str = "random"
    search_seed: int = 0
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    storage_path: str = DEFAULT_STORAGE
    data_dir: str | None = None
    smoke: bool = False

    @property
    def experiment_dir(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    @property
    def is_remote_storage(self) -> bool:
        return self.storage_path.startswith(URI_SCHEMES)

    @property
    def decisions_channel(self) -> str | None:
        """Multi-worker trials under ASHA get the scheduler's decisions on this channel (see
        trainables.decisions); None when Tune may stop trials itself."""
        if self.scheduler == "asha" and self.workers_per_trial > 1:
            return decisions.channel_name(self.experiment_dir)
        return None

    @property
    def trials_per_optimizer(self) -> int:
        return self.num_samples * self.seeds

    def lr_range(self, optimizer: str) -> tuple[float, float] | None:
        """The LR range of `optimizer` after --lr-min/--lr-max (None: the optimizer's own range)."""
        if self.lr_min is None and self.lr_max is None:
            return None
        default = spaces.SPACES[optimizer]["lr"]
        return (
            self.lr_min if self.lr_min is not None else default.low,  # type: ignore[attr-defined]
            self.lr_max if self.lr_max is not None else default.high,  # type: ignore[attr-defined]
        )

    def settings(self) -> dict[str, Any]:
        """The fixed run settings every trial gets (trainables.TrainConfig fields)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "data_dir": self.data_dir,
            "max_epochs": self.max_epochs,
            "batch_size": self.batch_size,
            "workers": self.workers_per_trial,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
            "scheduler_decisions": self.decisions_channel,
        }

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip().lower() for item in text.split(",") if item.strip())


def build_parser(prog: str, description: str, defaults: StudyArgs) -> argparse.ArgumentParser:
    p = _OneLineParser(prog=prog, description=description)
    d = defaults
    study = p.add_argument_group("what to compare")
    study.add_argument(
        "--optimizers",
        type=_csv,
        help=f"comma-separated, from {', '.join(optimizers.names())} (default: {','.join(d.optimizers)})",
    )
    study.add_argument(
        "--num-samples", type=int, help=f"configurations per optimizer (default: {d.num_samples})"
    )
    study.add_argument("--seeds", type=int, help=f"seeds per configuration (default: {d.seeds})")
    study.add_argument("--max-epochs", type=int, help=f"epochs per trial (default: {d.max_epochs})")
    study.add_argument("--lr-min", type=float, help="lower end of the LR range, for every optimizer")
    study.add_argument("--lr-max", type=float, help="upper end of the LR range, for every optimizer")
    study.add_argument(
        "--schedules", type=_csv, help=f"LR schedules to sweep (default: {','.join(d.schedules)})"
    )
    study.add_argument(
        "--scheduler", choices=("asha", "fifo"), help=f"early stopping (default: {d.scheduler})"
    )
    study.add_argument(
        "--search", choices=("random", "optuna"), help=f"search algorithm (default: {d.search})"
    )
    study.add_argument("--search-seed", type=int, help="seed of the configuration sampling (default: 0)")
    study.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run: 2 configurations per optimizer, 1 seed, 2 epochs (explicit flags win)",
    )
    task = p.add_argument_group("what to train")
    task.add_argument("--dataset", help=f"one of {', '.join(data.dataset_names())} (default: {d.dataset})")
    task.add_argument("--model", help=f"one of {', '.join(models.model_names())} (default: {d.model})")
    task.add_argument("--batch-size", type=int, help=f"per-worker batch size (default: {d.batch_size})")
    task.add_argument("--data-dir", help="where torchvision datasets are (or are downloaded to)")
    where = p.add_argument_group("where to run")
    where.add_argument(
        "--address", help="join an existing Ray cluster ('auto' after `ray up`); default: local Ray"
    )
    where.add_argument("--workers-per-trial", type=int, help="data-parallel workers per trial (default: 1)")
    where.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: 1)")
    where.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (default: 0)")
    where.add_argument(
        "--max-concurrent", type=int, help="trials at once (default: as many as resources allow)"
    )
    where.add_argument(
        "--storage-path", help=f"results root, a local dir or s3://... (default: ./{DEFAULT_STORAGE})"
    )
    where.add_argument(
        "--name", help=f"experiment name: results go to <storage-path>/<name> (default: {d.name})"
    )
    return p


def parse(argv: list[str] | None, prog: str, description: str, defaults: StudyArgs) -> StudyArgs:
    """Parse and validate; raises UsageError with a one-line message."""
    ns = build_parser(prog, description, defaults).parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if v is not None and k != "smoke"}
    values = dataclasses.asdict(defaults)
    if ns.smoke:
        values.update(SMOKE, smoke=True, name=f"{defaults.name}-smoke")
    values.update(given)
    args = StudyArgs(**values)
    validate(args)
    storage = (
        args.storage_path
        if args.is_remote_storage
        else os.path.abspath(os.path.expanduser(args.storage_path))
    )
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir)) if args.data_dir else None
    return dataclasses.replace(args, storage_path=storage, data_dir=data_dir)


def validate(args: StudyArgs) -> None:
    _check_choices("optimizer", args.optimizers, optimizers.names(), flag="--optimizers")
    _check_choices("schedule", args.schedules, schedules.names(), flag="--schedules")
    _check_choices("dataset", (args.dataset,), data.dataset_names(), flag="--dataset")
    _check_choices("model", (args.model,), models.model_names(), flag="--model")
    for flag in ("num_samples", "seeds", "max_epochs", "batch_size", "workers_per_trial"):
        value = getattr(args, flag)
        if value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {value} is invalid: it must be an integer >= 1")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UsageError(f"--max-concurrent {args.max_concurrent} is invalid: it must be an integer >= 1")
    if not 0 < args.cpus_per_worker < math.inf:
        raise UsageError(
            f"--cpus-per-worker {args.cpus_per_worker:g} is invalid: it must be a finite number > 0"
        )
    if not 0 <= args.gpus_per_worker < math.inf:
        raise UsageError(
            f"--gpus-per-worker {args.gpus_per_worker:g} is invalid: it must be a finite number >= 0"
        )
    if not 0 <= args.search_seed < 2**32:
        raise UsageError(f"--search-seed {args.search_seed} is invalid: it must be an integer in [0, 2**32)")
    for flag in ("lr_min", "lr_max"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < float("inf"):
            raise UsageError(
                f"--{flag.replace('_', '-')} {value:g} is invalid: it must be a finite number > 0"
            )
    for optimizer in args.optimizers:
        low, high = args.lr_range(optimizer) or (0.0, 1.0)
        if low > high:
            raise UsageError(
                f"--lr-min {_number(low)} is greater than --lr-max {_number(high)}"
                + (
                    ""
                    if args.lr_min is not None and args.lr_max is not None
                    else f" (the other end is {optimizer}'s default)"
                )
                + ": the LR range must have lr-min <= lr-max"
            )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise UsageError(f"--name {args.name!r} is invalid: use letters, digits, '.', '_' and '-' only")
    if len(args.name) > MAX_NAME_LENGTH:
        raise UsageError(f"--name is {len(args.name)} characters long: it must be at most {MAX_NAME_LENGTH}")
    if args.gpus_per_worker > 0 and args.address is None:
        _check_local_gpus(args)
    if not args.is_remote_storage:
        _check_writable(args.storage_path)


def _number(value: float) -> str:
    """Shortest exact spelling: 0.10000001 must not be shown as 0.1 next to a real 0.1."""
    return repr(float(value)).removesuffix(".0")


def _check_choices(kind: str, values: tuple[str, ...], valid: list[str], flag: str) -> None:
    if not values:
        raise UsageError(f"{flag} is empty: give at least one of {', '.join(valid)}")
    for value in values:
        if value not in valid:
            raise UsageError(f"unknown {kind} {value!r} in {flag}; valid: {', '.join(valid)}")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise UsageError(f"{flag} lists {', '.join(duplicates)} more than once")


def _check_local_gpus(args: StudyArgs) -> None:
    import torch

    needed = args.gpus_per_worker * args.workers_per_trial
    available = torch.cuda.device_count()
    if needed > available:
        raise UsageError(
            f"--gpus-per-worker {args.gpus_per_worker:g} x --workers-per-trial {args.workers_per_trial} "
            f"needs {needed:g} GPUs per trial, but this machine has {available}; lower them or pass --address"
        )


def _check_writable(path: str) -> None:
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".optsweep-write-check-"):
            pass
    except OSError as error:
        raise UsageError(
            f"--storage-path {path} is not writable ({error.strerror or error}); "
            "choose a directory you can write"
        ) from None


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
