"""Large-batch scaling: at a fixed epoch budget, how far can the batch grow before accuracy drops, with
SGD's linear scaling rule and gradual warmup, and do LARS and LAMB carry it further?

    python sweeps/large_batch.py            # teacher-student task, 16,384 examples, B = 256 ... 16,384
    python sweeps/large_batch.py --smoke    # 2 batch sizes, 2,048 examples, 2 epochs, no confirmation
    python sweeps/large_batch.py --full --address auto --gpus-per-worker 1   # CIFAR-10 / ResNet-18
    python sweeps/large_batch.py --help     # the headline study's flags, and this study's own below

Goyal et al. 2017 ("Accurate, Large Minibatch SGD", Table 1 / Fig. 2): scale SGD's learning rate with
the batch (lr = base_lr * B / B0), warm it up gradually, and accuracy holds up to a batch of 8k on
ImageNet, then drops. You et al. 2017 (LARS) and 2019 (LAMB) rescale each layer's step by a trust
ratio to go further. Here each batch size is one study (`<storage>/<name>/b<B>/`): every optimizer's lr
is a grid of factors around its rule's lr (the same grid size for each: equal budgets), warmup then
cosine decay, search seeds, then the chosen lr on fresh confirmation seeds. The section large_batch.md
(accuracy against batch size, steps to a target accuracy, where scaling breaks) is written into
`<storage>/<name>/report/`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from optsweep.sweeps import startup

if __name__ == "__main__":
    startup.begin()  # first: the imports below take seconds, and a Ctrl-C during them is one line

from optsweep.errors import OptsweepError
from optsweep.sweeps import cli
from optsweep.sweeps.spec import DEFAULT_STORAGE, URI_SCHEMES

NAME = "large_batch"
RECORD_FILE = "large_batch.json"
"""At the study's root: the batch sizes, the lr rules and the training-set size the analysis needs."""
RULES = ("linear", "sqrt")
TEACHER_TASK = "optsweep.trainables.large_batch_task:build_task"


@dataclass(frozen=True)
class Contender:
    """An optimizer's lr at the base batch, how it scales with the batch, and its fixed hyperparameters."""

    base_lr: float
    rule: str
    fixed: Mapping[str, Any]


@dataclass(frozen=True)
class Preset:
    """Everything a run of the study fixes besides the headline study's flags."""

    task: str
    task_args: Mapping[str, Any]
    batch_sizes: tuple[int, ...]
    base_batch: int
    max_epochs: int
    seeds: int
    confirm_seeds: int
    lr_factors: tuple[float, ...]
    contenders: Mapping[str, Contender]


# SGD as Goyal et al. (momentum 0.9, linear rule); LARS with the same rule (its paper scales SGD's
# recipe); Adam and LAMB with the square-root rule (You et al. 2019, Sec. 4). Base lrs: each optimizer's
# best lr at B0 = 256 in a first run of this study (2 search seeds; SGD's at the top of its grid then),
# so that the grid (16x) is centred at B0. No weight decay: the study is about the lr.
TEACHER = Preset(
    task=TEACHER_TASK,
    task_args={"n_train": 16384},
    batch_sizes=(256, 1024, 4096, 16384),
    base_batch=256,
    max_epochs=16,
    seeds=2,
    confirm_seeds=3,
    lr_factors=(0.25, 0.5, 1.0, 2.0, 4.0),
    contenders={
        "sgd": Contender(0.4, "linear", {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}),
        "adam": Contender(0.01, "sqrt", {"weight_decay": 0.0}),
        "lars": Contender(8.0, "linear", {"momentum": 0.9, "weight_decay": 0.0}),
        "lamb": Contender(0.02, "sqrt", {"weight_decay": 0.0}),
    },
)
SMOKE = Preset(
    task=TEACHER_TASK,
    task_args={"n_train": 2048, "n_val": 512, "n_test": 512},
    batch_sizes=(256, 2048),
    base_batch=256,
    max_epochs=2,
    seeds=1,
    confirm_seeds=0,
    lr_factors=(0.5, 1.0),
    contenders=TEACHER.contenders,
)
# The cluster run: ResNet-18 on CIFAR-10's 45,000 training images, B0 = 256 and SGD's 0.1 as in Goyal et
# al.; the other base lrs are the usual starting points for this model, not tuned here (the grid spans 16x).
FULL = Preset(
    task="cifar10",
    task_args={"model": "resnet18"},
    batch_sizes=(256, 1024, 4096, 16384, 45000),
    base_batch=256,
    max_epochs=30,
    seeds=3,
    confirm_seeds=5,
    lr_factors=(0.25, 0.5, 1.0, 2.0, 4.0),
    contenders={
        "sgd": Contender(0.1, "linear", {"momentum": 0.9, "nesterov": False, "weight_decay": 5e-4}),
        "adam": Contender(1e-3, "sqrt", {"weight_decay": 0.0}),
        "lars": Contender(2.0, "linear", {"momentum": 0.9, "weight_decay": 5e-4}),
        "lamb": Contender(4e-3, "sqrt", {"weight_decay": 0.01}),
    },
)

OWN_FLAGS = (
    "This study's own flags: --batch-sizes B1,B2,... (default: 256,1024,4096,16384; the largest is the "
    "whole training set), --base-batch B0 (the batch the base lrs are for; default 256), --lr-factors "
    "F1,F2,... (each optimizer's lr grid as factors of its rule's lr; default 0.25,0.5,1,2,4), --full "
    "(CIFAR-10 / ResNet-18, B = 256 ... 45,000, 30 epochs: the cluster run). Not allowed: --batch-size, "
    "--search, --schedules, --scheduler (the study fixes them)."
)
FIXED_FLAGS = ("--batch-size", "--search", "--schedules", "--scheduler", "--lr-min", "--lr-max")


def scaled_lr(base_lr: float, batch_size: int, base_batch: int, rule: str) -> float:
    """The learning rate for `batch_size` from `base_lr` at `base_batch`: ``linear`` is Goyal et al.'s
    rule (lr = base_lr * B / B0; e.g. 0.1 * 8192 / 256 = 3.2), ``sqrt`` scales by sqrt(B / B0)."""
    for what, value in (("batch size", batch_size), ("base batch", base_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptsweepError(f"{what} {value!r} is invalid: it must be an integer >= 1")
    if not (isinstance(base_lr, (int, float)) and math.isfinite(base_lr) and base_lr > 0):
        raise OptsweepError(f"base lr {base_lr!r} is invalid: it must be a finite number > 0")
    if rule == "linear":
        return base_lr * batch_size / base_batch
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size / base_batch)
    raise OptsweepError(f"unknown lr scaling rule {rule!r}; valid: {', '.join(RULES)}")


def lr_grid(
    contender: Contender, batch_size: int, base_batch: int, factors: tuple[float, ...]
) -> list[float]:
    """The lrs an optimizer is trained with at `batch_size`: its rule's lr times each factor (6 digits)."""
    center = scaled_lr(contender.base_lr, batch_size, base_batch, contender.rule)
    return [float(f"{center * factor:.6g}") for factor in factors]


def search_spaces(preset: Preset, optimizers: tuple[str, ...], batch_size: int) -> dict[str, Any]:
    """Each optimizer's grid at `batch_size`: the lr choices around its rule's lr, the rest fixed."""
    return {
        label: {
            "lr": {
                "choice": lr_grid(preset.contenders[label], batch_size, preset.base_batch, preset.lr_factors)
            },
            **preset.contenders[label].fixed,
        }
        for label in optimizers
    }


def experiment_name(batch_size: int) -> str:
    return f"b{batch_size}"


class _OneLine(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise OptsweepError(message)


def _positive_ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise OptsweepError(f"{flag} {text!r} is invalid: give comma-separated integers >= 1") from None
    if not values or min(values) < 1:
        raise OptsweepError(f"{flag} {text!r} is invalid: give comma-separated integers >= 1")
    if len(set(values)) != len(values):
        raise OptsweepError(f"{flag} {text!r} lists a batch size more than once")
    return tuple(sorted(values))


def _positive_floats(flag: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise OptsweepError(f"{flag} {text!r} is invalid: give comma-separated numbers > 0") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise OptsweepError(f"{flag} {text!r} is invalid: give comma-separated numbers > 0")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class Plan:
    """The study as the command line asks for it: the preset, the optimizers, where, and the flags left
    for the headline study's parser."""

    preset: Preset
    optimizers: tuple[str, ...]
    name: str
    storage_path: str
    smoke: bool
    flags: list[str]
    workers: int = 1

    @property
    def root(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    def defaults(self, batch_size: int) -> dict[str, Any]:
        """The study settings of one batch size (the headline flags in `flags` override them)."""
        p = self.preset
        return {
            "name": experiment_name(batch_size),
            "storage_path": self.root,
            "optimizers": self.optimizers,
            "search_spaces": search_spaces(p, self.optimizers, batch_size),
            "search": "grid",
            "scheduler": "fifo",
            "schedules": ("warmup_cosine",),
            "seeds": p.seeds,
            "confirm_seeds": p.confirm_seeds,
            "task": p.task,
            "task_args": dict(p.task_args),
            "max_epochs": p.max_epochs,
            "batch_size": batch_size // self.workers,  # a trial's batch is per worker
            "smoke": self.smoke,
        }


def plan(argv: list[str]) -> Plan:
    """This study's flags read, the rest kept for the headline parser; one-line OptsweepErrors."""
    own = _OneLine(add_help=False, allow_abbrev=False)  # --batch-size must not pass for --batch-sizes
    own.add_argument("--batch-sizes")
    own.add_argument("--base-batch", type=int)
    own.add_argument("--lr-factors")
    own.add_argument("--full", action="store_true")
    own.add_argument("--smoke", action="store_true")
    own.add_argument("--name")
    own.add_argument("--storage-path")
    own.add_argument("--optimizers")
    own.add_argument("--workers-per-trial", type=int)
    ns, rest = own.parse_known_args(argv)
    for flag in FIXED_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in rest):
            raise OptsweepError(
                f"{flag} is fixed by this study (one study per batch size, an lr grid, warmup then cosine); "
                "use --batch-sizes, --base-batch, --lr-factors"
            )
    if ns.full and ns.smoke:
        raise OptsweepError("give either --full or --smoke, not both")
    preset = FULL if ns.full else SMOKE if ns.smoke else TEACHER
    changes: dict[str, Any] = {}
    if ns.batch_sizes is not None:
        changes["batch_sizes"] = _positive_ints("--batch-sizes", ns.batch_sizes)
    if ns.base_batch is not None:
        if ns.base_batch < 1:
            raise OptsweepError(f"--base-batch {ns.base_batch} is invalid: it must be an integer >= 1")
        changes["base_batch"] = ns.base_batch
    if ns.lr_factors is not None:
        changes["lr_factors"] = _positive_floats("--lr-factors", ns.lr_factors)
    preset = Preset(**{**preset.__dict__, **changes})
    optimizers = tuple(preset.contenders)
    if ns.optimizers is not None:
        optimizers = tuple(item.strip().lower() for item in ns.optimizers.split(",") if item.strip())
        unknown = [o for o in optimizers if o not in preset.contenders]
        if not optimizers or unknown:
            raise OptsweepError(
                f"--optimizers {ns.optimizers!r} is invalid: this study compares any of "
                f"{', '.join(preset.contenders)} (each has a base lr and a scaling rule)"
            )
    name = ns.name if ns.name is not None else NAME + ("-smoke" if ns.smoke else "")
    storage = ns.storage_path if ns.storage_path is not None else DEFAULT_STORAGE
    if not storage.startswith(URI_SCHEMES):
        storage = os.path.abspath(os.path.expanduser(storage))
    workers = ns.workers_per_trial if ns.workers_per_trial is not None else 1
    if workers < 1:
        raise OptsweepError(f"--workers-per-trial {workers} is invalid: it must be an integer >= 1")
    uneven = [b for b in preset.batch_sizes if b % workers]
    if uneven:
        raise OptsweepError(
            f"--workers-per-trial {workers} does not divide the batch size(s) {', '.join(map(str, uneven))}: "
            "each worker trains an equal share of a trial's batch"
        )
    if ns.workers_per_trial is not None:
        rest = [*rest, "--workers-per-trial", str(workers)]
    return Plan(preset, optimizers, name, storage, ns.smoke, rest, workers)


def training_examples(task: str, task_args: Mapping[str, Any], data_dir: str | None) -> int:
    """The size of the task's training split: one epoch's examples, from which the steps per epoch follow."""
    from optsweep.trainables import tasks

    return len(tasks.build_task(task, task_args, data_dir=data_dir).data().train)  # type: ignore[arg-type]


def write_record(plan_: Plan, n_train: int, max_epochs: int) -> str:
    """The record the analysis reads at the study's root (local or remote storage): batch sizes, base
    batch, rules, lrs and the training-set size."""
    p = plan_.preset
    record = {
        "batch_sizes": list(p.batch_sizes),
        "base_batch": p.base_batch,
        "n_train": n_train,
        "max_epochs": max_epochs,
        "lr_factors": list(p.lr_factors),
        "task": p.task,
        "experiments": {str(b): experiment_name(b) for b in p.batch_sizes},
        "optimizers": {
            label: {
                "base_lr": p.contenders[label].base_lr,
                "rule": p.contenders[label].rule,
                "fixed": dict(p.contenders[label].fixed),
            }
            for label in plan_.optimizers
        },
    }
    text = json.dumps(record, indent=2) + "\n"
    if plan_.root.startswith(URI_SCHEMES):
        from pyarrow import fs  # Ray's own dependency, as Tune writes remote storage with it

        filesystem, root = fs.FileSystem.from_uri(plan_.root)
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(f"{root}/{RECORD_FILE}") as stream:
            stream.write(text.encode())
        return f"{plan_.root}/{RECORD_FILE}"
    path = Path(plan_.root).expanduser() / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "python sweeps/large_batch.py"
    description = f"{(__doc__ or '').split(chr(10) + chr(10))[0]} {OWN_FLAGS}"
    try:
        study = plan(argv)
        specs = [
            cli.parse(study.flags, prog, description, study.defaults(b)) for b in study.preset.batch_sizes
        ]
        n_train = training_examples(specs[0].task, specs[0].task_args, specs[0].data_dir)
        over = [b for b in study.preset.batch_sizes if b > n_train]
        if over:
            raise OptsweepError(
                f"--batch-sizes {','.join(map(str, over))} exceed the training set ({n_train} examples): "
                "the largest batch is the whole training set"
            )
    except OptsweepError as error:
        return cli.fail(str(error))
    write_record(study, n_train, specs[0].max_epochs or study.preset.max_epochs)
    for batch_size in study.preset.batch_sizes:
        print(f"Batch size {batch_size}: {study.root}/{experiment_name(batch_size)}", flush=True)
        code = cli.main(study.flags, prog=prog, description=description, defaults=study.defaults(batch_size))
        if code != 0:
            return code
    if specs[0].is_remote_storage:
        print(
            f"The large-batch section reads a local directory: copy {study.root} here and run "
            "python -m optsweep.analysis.large_batch DIR"
        )
        return 0
    from optsweep.analysis import large_batch

    print(f"Large-batch scaling: {large_batch.write_section(study.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
