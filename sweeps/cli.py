"""Command-line arguments of a study, validated before Ray starts: a mistake costs one clear line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, NoReturn

from optsweep.optimizers import schedules
from optsweep.trainables import builtin_tasks, data, decisions, models, optimizer_choice
from optsweep.trainables.config import MODES

from optsweep import optimizers
from optsweep.vocabulary import CONFIRM_SEED_BASE

from . import contenders, spaces, tracking

DATASET_TASKS = tuple(data.dataset_names())
"""Built-in classification tasks named after their dataset (`--dataset` picks one)."""
DEFAULT_STORAGE = "optsweep_results"
SMOKE = {"num_samples": 2, "seeds": 1, "max_epochs": 2, "confirm_seeds": 0}
"""`--smoke`: a tiny version of the study, the search stage only (flags given explicitly still win)."""

MAX_NAME_LENGTH = 200  # a directory name; file systems allow 255 bytes
URI_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://")


class UsageError(ValueError):
    """A bad command-line value; the message is the one line the user sees."""


@dataclass(frozen=True)
class StudyArgs:
    """Everything a study run needs; also written to <experiment>/study.json."""

    name: str
    # Registered names (optimizers.names()) or import paths of torch.optim.Optimizer subclasses.
    optimizers: tuple[str, ...] = ("sgd", "adam", "adamw")
    num_samples: int = 16
    seeds: int = 3
    # Fresh seeds on which each optimizer's chosen configuration is retrained after the search (0: none).
    confirm_seeds: int = 10
    # What is trained (trainables.tasks.build_task): a built-in task or an import path, and its arguments.
    task: str = "digits"
    task_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    # None: the task's own budget.
    max_epochs: int | None = None
    batch_size: int | None = None
    # Declared search spaces by optimizer label (plain form, see spaces.parse_param); built-ins have theirs.
    search_spaces: dict[str, Any] = dataclasses.field(default_factory=dict)
    schedules: tuple[str, ...] = spaces.SCHEDULES
    lr_min: float | None = None
    lr_max: float | None = None
    scheduler: str = "asha"
    search: str = "random"
    search_seed: int = 0
    workers_per_trial: int = 1
    # How a trial's workers train (trainables.config.MODES): sync, zero1 or async-ps.
    mode: str = "sync"
    staleness_aware_lr: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    storage_path: str = DEFAULT_STORAGE
    data_dir: str | None = None
    log_to: tuple[str, ...] = ()
    tracking_uri: str | None = None
    keep_checkpoints: int = 1
    trust_storage: bool = False
    # Fused trials (sweeps.fusion): None = K members per group by the memory rule, 0 = unfused, K = K.
    fuse: int | None = None
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

    @property
    def labels(self) -> tuple[str, ...]:
        """The optimizers' labels: their experiment directories and their names in the report."""
        return tuple(contenders.label_of(reference) for reference in self.optimizers)

    def references(self) -> dict[str, str]:
        """label -> registered name or import path."""
        return dict(zip(self.labels, self.optimizers, strict=True))

    def lr_range(self, optimizer: str, params: dict[str, Any] | None = None) -> tuple[float, float] | None:
        """The LR range of `optimizer` after --lr-min/--lr-max (None: the optimizer's own range); `params`
        is its space (default: the built-in optimizer's)."""
        if self.lr_min is None and self.lr_max is None:
            return None
        default = (params if params is not None else spaces.default_params(optimizer)).get("lr")
        if not isinstance(default, (spaces.LogUniform, spaces.Uniform)):
            raise UsageError(
                f"--lr-min/--lr-max need {optimizer}'s lr to be searched over a range; "
                f"its space has {default!r}"
            )
        return (
            self.lr_min if self.lr_min is not None else default.low,  # type: ignore[attr-defined]
            self.lr_max if self.lr_max is not None else default.high,  # type: ignore[attr-defined]
        )

    def settings(self) -> dict[str, Any]:
        """The fixed run settings every trial gets (trainables.TrainConfig fields)."""
        return {
            "task": self.task,
            "task_args": dict(self.task_args),
            "data_dir": self.data_dir,
            "max_epochs": self.max_epochs,
            "batch_size": self.batch_size,
            "workers": self.workers_per_trial,
            "mode": self.mode,
            "staleness_aware_lr": self.staleness_aware_lr,
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


def _optimizer_list(text: str) -> tuple[str, ...]:
    """Registered names are case-insensitive; import paths keep their case (class names)."""
    items = (item.strip() for item in text.split(","))
    return tuple(item if optimizer_choice.is_reference(item) else item.lower() for item in items if item)


def _task_args(pairs: list[str]) -> dict[str, Any]:
    """--task-arg KEY=VALUE pairs; VALUE is JSON (numbers, true/false, lists) or else a plain string."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--task-arg {pair!r} is invalid: write KEY=VALUE with KEY a Python identifier")
        try:
            result[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            result[key.strip()] = text
    return result


def build_parser(prog: str, description: str, defaults: StudyArgs) -> argparse.ArgumentParser:
    p = _OneLineParser(prog=prog, description=description)
    d = defaults
    study = p.add_argument_group("what to compare")
    study.add_argument(
        "--optimizers",
        type=_optimizer_list,
        help=f"comma-separated, from {', '.join(optimizers.names())}, or import paths of "
        "torch.optim.Optimizer subclasses (my_pkg.opt:Lion) that declare a search space "
        f"(default: {','.join(d.optimizers)})",
    )
    study.add_argument(
        "--num-samples", type=int, help=f"configurations per optimizer (default: {d.num_samples})"
    )
    study.add_argument(
        "--seeds", type=int, help=f"search seeds per configuration, 0, 1, ... (default: {d.seeds})"
    )
    study.add_argument(
        "--confirm-seeds",
        type=int,
        metavar="N",
        help="after the search, retrain each optimizer's chosen configuration on N fresh seeds "
        f"({CONFIRM_SEED_BASE}, {CONFIRM_SEED_BASE + 1}, ...) for the full epochs; the report's numbers come "
        f"from them (default: {d.confirm_seeds}; 0: no confirmation stage, the numbers are then "
        "selection-biased)",
    )
    study.add_argument(
        "--max-epochs",
        type=int,
        help="epochs per trial (default: "
        + (str(d.max_epochs) if d.max_epochs is not None else "the task's own")
        + ")",
    )
    study.add_argument("--lr-min", type=float, help="lower end of the LR range, for every optimizer")
    study.add_argument("--lr-max", type=float, help="upper end of the LR range, for every optimizer")
    study.add_argument(
        "--schedules", type=_csv, help=f"LR schedules to sweep (default: {','.join(d.schedules)})"
    )
    study.add_argument(
        "--scheduler", choices=("asha", "fifo"), help=f"early stopping (default: {d.scheduler})"
    )
    study.add_argument(
        "--search",
        choices=("random", "grid", "optuna"),
        help=f"search algorithm; grid: every combination of the spaces' choices (default: {d.search})",
    )
    study.add_argument("--search-seed", type=int, help="seed of the configuration sampling (default: 0)")
    study.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run: 2 configurations per optimizer, 1 seed, 2 epochs, no confirmation stage (explicit "
        "flags win)",
    )
    task = p.add_argument_group("what to train")
    task.add_argument(
        "--task",
        help=f"a built-in task ({', '.join(builtin_tasks.names())}), or an import path of a function "
        "returning an optsweep Task: my_pkg.tasks:build_task or path/to/my_task.py:build_task "
        f"(default: {d.task})",
    )
    task.add_argument(
        "--task-arg",
        dest="task_arg",
        action="append",
        metavar="KEY=VALUE",
        help="an argument of the task's factory (repeatable; VALUE is read as JSON, else as a string)",
    )
    task.add_argument(
        "--dataset",
        help=f"shorthand for --task with a built-in classification task ({', '.join(DATASET_TASKS)})",
    )
    task.add_argument(
        "--model", help=f"shorthand for --task-arg model=NAME ({', '.join(models.model_names())})"
    )
    task.add_argument("--batch-size", type=int, help="per-worker batch size (default: the task's)")
    task.add_argument("--data-dir", help="where torchvision datasets are (or are downloaded to)")
    where = p.add_argument_group("where to run")
    where.add_argument(
        "--address", help="join an existing Ray cluster ('auto' after `ray up`); default: local Ray"
    )
    where.add_argument("--workers-per-trial", type=int, help="data-parallel workers per trial (default: 1)")
    where.add_argument(
        "--mode",
        help="how a trial's workers train: sync (data parallel), zero1 (sync with the optimizer state "
        "sharded, needs --workers-per-trial >= 2), async-ps (a parameter server and --workers-per-trial "
        "asynchronous workers) (default: sync)",
    )
    where.add_argument(
        "--staleness-aware-lr",
        action="store_true",
        default=None,
        help="async-ps: divide each update's lr by its gradient's staleness (Zhang et al. 2016)",
    )
    where.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: 1)")
    where.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (default: 0)")
    where.add_argument(
        "--fuse",
        type=int,
        metavar="K",
        help="train up to K trials of an optimizer at once in one process, as one fused trial (default: "
        "K from the model's size and the free memory, where the study allows fusion)",
    )
    where.add_argument(
        "--no-fuse", action="store_true", default=None, help="train every trial in its own process"
    )
    where.add_argument(
        "--max-concurrent",
        type=int,
        help="trials of each optimizer at once (default: as many as resources allow)",
    )
    where.add_argument(
        "--storage-path", help=f"results root, a local dir or s3://... (default: ./{DEFAULT_STORAGE})"
    )
    where.add_argument(
        "--name", help=f"experiment name: results go to <storage-path>/<name> (default: {d.name})"
    )
    where.add_argument(
        "--keep-checkpoints",
        type=int,
        help="checkpoints kept per finished trial (default: 1; 0 keeps only the results)",
    )
    where.add_argument(
        "--trust-storage",
        action="store_true",
        default=None,
        help="resume an experiment this user did not create here (resuming unpickles its tuner.pkl)",
    )
    results = p.add_argument_group("where results are shown")
    results.add_argument(
        "--log-to",
        type=_backends,
        help=f"also log every trial and the study summary to any of {', '.join(tracking.BACKENDS)} "
        "(comma-separated; default: none)",
    )
    results.add_argument(
        "--tracking-uri",
        help="MLflow tracking server or store, e.g. http://host:5000 (default: <experiment>/mlflow.db)",
    )
    return p


def _backends(text: str) -> tuple[str, ...]:
    try:
        return tracking.parse_backends(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse(argv: list[str] | None, prog: str, description: str, defaults: StudyArgs) -> StudyArgs:
    """Parse and validate; raises UsageError with a one-line message."""
    ns = build_parser(prog, description, defaults).parse_args(argv)
    shorthands = ("smoke", "dataset", "model", "task_arg", "no_fuse")
    given = {k: v for k, v in vars(ns).items() if v is not None and k not in shorthands}
    values = dataclasses.asdict(defaults)
    if ns.smoke:
        values.update(SMOKE, smoke=True, name=f"{defaults.name}-smoke")
    values.update(given)
    if ns.dataset is not None:
        if ns.task is not None:
            raise UsageError("give either --task or --dataset, not both")
        if ns.dataset not in DATASET_TASKS:
            raise UsageError(
                f"unknown dataset {ns.dataset!r} in --dataset; valid: {', '.join(DATASET_TASKS)}"
            )
        values["task"] = ns.dataset
    if ns.no_fuse:
        if ns.fuse is not None:
            raise UsageError("give either --fuse K or --no-fuse, not both")
        values["fuse"] = 0
    if values["task"] != defaults.task:
        values["task_args"] = {}  # the default task's arguments do not carry over to another task
    values["task_args"] = {**values["task_args"], **_task_args(ns.task_arg or [])}
    if ns.model is not None:
        values["task_args"]["model"] = ns.model
    args = StudyArgs(**values)
    validate(args)
    storage = (
        args.storage_path
        if args.is_remote_storage
        else os.path.abspath(os.path.expanduser(args.storage_path))
    )
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir)) if args.data_dir else None
    return dataclasses.replace(args, storage_path=storage, data_dir=data_dir)


def validate(args: StudyArgs, *, named_task: bool = True) -> None:
    """One-line UsageErrors for bad settings; `named_task` False: the task is an object, not a name."""
    registered = [o for o in args.optimizers if not optimizer_choice.is_reference(o)]
    if not args.optimizers or registered:
        _check_choices("optimizer", tuple(registered), optimizers.names(), flag="--optimizers")
    duplicates = sorted({label for label in args.labels if args.labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"--optimizers names {', '.join(duplicates)} more than once")
    _check_choices("schedule", args.schedules, schedules.names(), flag="--schedules")
    if named_task and ":" not in args.task and args.task not in builtin_tasks.TASKS:
        raise UsageError(
            f"unknown task {args.task!r} in --task; built-in: {', '.join(builtin_tasks.names())}, "
            "or an import path my_pkg.tasks:build_task / path/to/my_task.py:build_task"
        )
    if "model" in args.task_args and args.task in DATASET_TASKS:
        _check_choices("model", (str(args.task_args["model"]),), models.model_names(), flag="--model")
    for flag in ("num_samples", "seeds", "max_epochs", "batch_size", "workers_per_trial"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {value} is invalid: it must be an integer >= 1")
    confirm = args.confirm_seeds
    if not isinstance(confirm, int) or isinstance(confirm, bool) or confirm < 0:
        raise UsageError(
            f"--confirm-seeds {confirm!r} is invalid: it must be an integer >= 0 (0: no confirmation stage)"
        )
    if args.seeds is not None and args.seeds > CONFIRM_SEED_BASE:
        raise UsageError(
            f"--seeds {args.seeds} is invalid: at most {CONFIRM_SEED_BASE} (the confirmation seeds start at "
            f"{CONFIRM_SEED_BASE})"
        )
    if args.mode not in MODES:
        raise UsageError(f"unknown mode {args.mode!r} in --mode; valid: {', '.join(MODES)}")
    if args.mode == "zero1" and args.workers_per_trial < 2:
        raise UsageError(
            f"--mode zero1 shards the optimizer state across a trial's workers: it needs "
            f"--workers-per-trial >= 2 (got {args.workers_per_trial}); use --mode sync for one worker"
        )
    if args.staleness_aware_lr and args.mode != "async-ps":
        raise UsageError(f"--staleness-aware-lr is for --mode async-ps (got --mode {args.mode})")
    if args.fuse is not None and args.fuse < 0:
        raise UsageError(f"--fuse {args.fuse} is invalid: it must be an integer >= 1 (or --no-fuse)")
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
    for optimizer in registered:
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
    _check_tracking(args)
    if args.keep_checkpoints < 0:
        raise UsageError(f"--keep-checkpoints {args.keep_checkpoints} is invalid: it must be an integer >= 0")
    if args.data_dir is not None and os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir} is a file: it must be a directory (or not exist yet)")
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


def _check_tracking(args: StudyArgs) -> None:
    if args.tracking_uri is None:
        if tracking.MLFLOW in args.log_to and args.is_remote_storage:
            raise UsageError(
                f"--log-to mlflow with --storage-path {args.storage_path} needs --tracking-uri (an MLflow "
                "server): the default store is a file in a local experiment directory"
            )
        return
    if tracking.MLFLOW not in args.log_to:
        raise UsageError(f"--tracking-uri {args.tracking_uri} is for MLflow: add mlflow to --log-to")
    try:
        tracking.check_tracking_uri(args.tracking_uri)
    except ValueError as error:
        raise UsageError(str(error)) from None


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
