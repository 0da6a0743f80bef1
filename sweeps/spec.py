"""The study spec: every setting of a study, defined once (type, default, what is allowed, its help), and
checked the same way whichever door it came through: the Python API (`optsweep.Study`), a study file
(`optsweep run STUDY.yaml`) or the command line's flags. The doors only build a `StudySpec`; a bad value
is a `SpecError` naming the setting as that door spells it (``--num-samples``, ``num_samples`` in the
file, ``num_samples=``), the value and what is allowed, before anything expensive starts.

Pure Python plus pydantic (no torch, no Ray): the command line's ``--help`` and these checks stay fast.
Checks that need the user's code (an optimizer's import path, a task factory's arguments) happen when the
study is prepared (`sweeps.runner.plan.prepare`), still before Ray starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BeforeValidator, Field, Strict, StringConstraints

from optsweep import catalog
from optsweep.errors import OptsweepError
from optsweep.vocabulary import CONFIRM_SEED_BASE

DEFAULT_STORAGE = "optsweep_results"
DEFAULT_SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")
SMOKE = {"num_samples": 2, "seeds": 1, "max_epochs": 2, "confirm_seeds": 0}
"""`smoke`: a tiny version of the study, the search stage only (settings given explicitly still win)."""
MAX_NAME_LENGTH = 200  # a directory name; file systems allow 255 bytes
URI_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
LABEL_PATTERN = r"[a-z0-9][a-z0-9_.-]*"

Door = Literal["cli", "file", "python"]


class SpecError(OptsweepError):
    """A bad setting. `template` names settings as ``{field}``; `for_door` spells them as the user wrote
    them (``--num-samples``, ``num_samples``), so each door's message names what the user can fix."""

    def __init__(self, template: str, door: Door = "python", where: str | None = None) -> None:
        self.template, self.door, self.where = template, door, where
        super().__init__(_spell(template, door, where))

    def for_door(self, door: Door, where: str | None = None) -> SpecError:
        return SpecError(self.template, door, where)


def _spell(template: str, door: Door, where: str | None) -> str:
    class Names(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> str:
            if key in _SHORTHANDS:
                return _SHORTHANDS[key][0 if door == "cli" else 1]
            return f"--{key.replace('_', '-')}" if door == "cli" else key

    message = template.format_map(Names())
    return f"{message} (in {where})" if where else message


_SHORTHANDS = {"model": ("--model", "task_args.model")}
"""Names a message may use that are no setting: (the flag, the setting it stands for)."""


def _literal(text: str) -> str:
    """`text` placed in a template as itself (braces in user values are not setting names)."""
    return text.replace("{", "{{").replace("}", "}}")


def shown(value: Any) -> str:
    """A value as a message shows it: numbers plainly, strings quoted, lists comma-separated."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return repr(list(value))
    return repr(value)


def invalid(field: str, value: Any, allowed: str) -> SpecError:
    """``{field} <value> is invalid: it must be <allowed>``."""
    return SpecError(f"{{{field}}} {_literal(shown(value))} is invalid: it must be {_literal(allowed)}")


# ------------------------------------------------------------------------------------------ value types
def _real_number(value: Any) -> Any:
    """A number (int or float), never a bool or a string: `"1"` and `True` are refused, not converted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    return float(value)


def _string_list(value: Any) -> Any:
    """A list or tuple (a lone string is refused: ``"adam"`` is not ``["adam"]``)."""
    if not isinstance(value, (list, tuple)):
        raise ValueError("not a list")
    return tuple(value)


StrictInt = Annotated[int, Strict()]
Number = Annotated[float, BeforeValidator(_real_number)]
Text = Annotated[str, Strict()]
Names = Annotated[tuple[Text, ...], BeforeValidator(_string_list)]


def _setting(default: Any, allowed: str, help: str, group: str, **constraints: Any) -> Any:
    """A field of the spec: its default, what is allowed (the error's words), its help and its group on
    the command line."""
    extra = {"allowed": allowed, "group": group}
    if isinstance(default, (dict, list)):
        return Field(
            default_factory=lambda: type(default)(default), description=help, json_schema_extra=extra
        )
    return Field(default, description=help, json_schema_extra=extra, **constraints)


COMPARE, TRAIN, WHERE, RESULTS = "what to compare", "what to train", "where to run", "where results are shown"


@pydantic.dataclasses.dataclass(frozen=True, config=pydantic.ConfigDict(arbitrary_types_allowed=True))
class StudySpec:
    """Every setting of a study, checked: what to compare, what to train, where to run and where results
    are shown. Its identity part is recorded in the experiment's study.json, and the whole resolved spec in
    its study.yaml (a study file that reruns it). Build one with `build` (or through `optsweep.Study`, a
    study file or the command line): a bad value is a `SpecError` naming the setting."""

    name: Annotated[Text, StringConstraints(pattern=f"^{NAME_PATTERN}$", max_length=MAX_NAME_LENGTH)] = (
        _setting(
            "study",
            f"letters, digits, '.', '_' and '-' (at most {MAX_NAME_LENGTH} characters)",
            "experiment name: results go to <storage-path>/<name>",
            WHERE,
        )
    )
    optimizers: Names = _setting(
        ("sgd", "adam", "adamw"),
        f"a non-empty list of {', '.join(catalog.OPTIMIZERS)} or import paths (my_pkg.opt:Lion)",
        f"optimizers to compare: {', '.join(catalog.OPTIMIZERS)}, or import paths of torch.optim.Optimizer "
        "subclasses (my_pkg.opt:Lion) that declare a search space",
        COMPARE,
    )
    search_spaces: dict[str, Any] = _setting(
        {},
        "a mapping of optimizer label -> {hyperparameter: distribution}",
        "search spaces by optimizer label (plain form: {log_uniform: [low, high]}, {choice: [...]}, a value)",
        COMPARE,
    )
    num_samples: StrictInt = _setting(24, "an integer >= 1", "configurations per optimizer", COMPARE, ge=1)
    seeds: StrictInt = _setting(
        3,
        f"an integer >= 1, at most {CONFIRM_SEED_BASE} (the confirmation seeds start at {CONFIRM_SEED_BASE})",
        "search seeds per configuration, 0, 1, ...",
        COMPARE,
        ge=1,
        le=CONFIRM_SEED_BASE,
    )
    confirm_seeds: StrictInt = _setting(
        10,
        "an integer >= 0 (0: no confirmation stage)",
        f"after the search, retrain each optimizer's chosen configuration on N fresh seeds "
        f"({CONFIRM_SEED_BASE}, {CONFIRM_SEED_BASE + 1}, ...) for the full epochs; the report's numbers "
        "come from them (0: no confirmation stage, the numbers are then selection-biased)",
        COMPARE,
        ge=0,
    )
    max_epochs: StrictInt | None = _setting(
        None, "an integer >= 1", "epochs per trial (default: the task's own)", COMPARE, ge=1
    )
    lr_min: Number | None = _setting(
        None,
        "a finite number > 0",
        "lower end of the LR range, for every optimizer",
        COMPARE,
        gt=0,
        allow_inf_nan=False,
    )
    lr_max: Number | None = _setting(
        None,
        "a finite number > 0",
        "upper end of the LR range, for every optimizer",
        COMPARE,
        gt=0,
        allow_inf_nan=False,
    )
    schedules: Names = _setting(
        DEFAULT_SCHEDULES,
        f"a non-empty list of {', '.join(catalog.SCHEDULES)}",
        "LR schedules to sweep",
        COMPARE,
    )
    scheduler: Literal["asha", "fifo"] = _setting(
        "asha", "asha or fifo", "early stopping: asha (per configuration) or fifo (none)", COMPARE
    )
    search: Literal["random", "grid", "optuna"] = _setting(
        "random",
        "random, grid or optuna",
        "search algorithm; grid: every combination of the spaces' choices",
        COMPARE,
    )
    search_seed: StrictInt = _setting(
        0, "an integer in [0, 2**32)", "seed of the configuration sampling", COMPARE, ge=0, lt=2**32
    )
    smoke: Annotated[bool, Strict()] = _setting(
        False,
        "true or false",
        "tiny run: 2 configurations per optimizer, 1 seed, 2 epochs, no confirmation stage (explicit "
        "settings win)",
        COMPARE,
    )
    task: Text = _setting(
        "digits",
        f"a built-in task ({', '.join(catalog.TASKS)}) or an import path (my_pkg.tasks:build_task, "
        "path/to/my_task.py:build_task)",
        f"a built-in task ({', '.join(catalog.TASKS)}), or an import path of a function returning an "
        "optsweep Task: my_pkg.tasks:build_task or path/to/my_task.py:build_task",
        TRAIN,
    )
    python_path: Names = _setting(
        (),
        "a list of directories",
        "directories to import the task and optimizers from (user code that is not installed), before "
        "the current directory",
        TRAIN,
    )
    task_args: dict[str, Any] = _setting(
        {}, "a mapping of argument -> value", "arguments of the task's factory", TRAIN
    )
    batch_size: StrictInt | None = _setting(
        None, "an integer >= 1", "per-worker batch size (default: the task's)", TRAIN, ge=1
    )
    data_dir: Text | None = _setting(
        None, "a directory", "where torchvision datasets are (or are downloaded to)", TRAIN
    )
    address: Text | None = _setting(
        None,
        "host:port, auto or ray://host:port",
        "join an existing Ray cluster ('auto' after `ray up`); default: local Ray",
        WHERE,
    )
    workers_per_trial: StrictInt = _setting(
        1, "an integer >= 1", "data-parallel workers per trial", WHERE, ge=1
    )
    mode: Literal["sync", "zero1", "async-ps"] = _setting(
        "sync",
        ", ".join(catalog.MODES),
        "how a trial's workers train: sync (data parallel), zero1 (sync with the optimizer state sharded, "
        "needs workers-per-trial >= 2), async-ps (a parameter server and asynchronous workers)",
        WHERE,
    )
    staleness_aware_lr: Annotated[bool, Strict()] = _setting(
        False,
        "true or false",
        "async-ps: divide each update's lr by its gradient's staleness (Zhang et al. 2016)",
        WHERE,
    )
    cpus_per_worker: Number = _setting(
        1.0, "a finite number > 0", "CPUs per worker", WHERE, gt=0, allow_inf_nan=False
    )
    gpus_per_worker: Number = _setting(
        0.0, "a finite number >= 0", "GPUs per worker", WHERE, ge=0, allow_inf_nan=False
    )
    fuse: StrictInt | None = _setting(
        None,
        "an integer >= 0 (0: unfused) or null (by the memory rule)",
        "train up to K trials of an optimizer at once in one process, as one fused trial (default: K from "
        "the model's size and the free memory, where the study allows fusion; 0: unfused)",
        WHERE,
        ge=0,
    )
    max_concurrent: StrictInt | None = _setting(
        None,
        "an integer >= 1",
        "trials of each optimizer at once (default: as many as resources allow)",
        WHERE,
        ge=1,
    )
    storage_path: Text = _setting(
        DEFAULT_STORAGE,
        "a local directory or a URI (s3://bucket/path)",
        f"results root, a local dir or s3://... (default: ./{DEFAULT_STORAGE})",
        WHERE,
    )
    keep_checkpoints: StrictInt = _setting(
        1, "an integer >= 0", "checkpoints kept per finished trial (0 keeps only the results)", WHERE, ge=0
    )
    trust_storage: Annotated[bool, Strict()] = _setting(
        False,
        "true or false",
        "resume an experiment this user did not create here (resuming unpickles its tuner.pkl)",
        WHERE,
    )
    log_to: Names = _setting(
        (),
        f"a list of {', '.join(catalog.TRACKING_BACKENDS)}",
        f"also log every trial and the study summary to any of {', '.join(catalog.TRACKING_BACKENDS)}",
        RESULTS,
    )
    tracking_uri: Text | None = _setting(
        None,
        "an MLflow tracking URI",
        "MLflow tracking server or store, e.g. http://host:5000 (default: <experiment>/mlflow.db)",
        RESULTS,
    )

    # ------------------------------------------------------------------------------- derived values
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
            from optsweep.trainables import decisions

            return decisions.channel_name(self.experiment_dir)
        return None

    @property
    def trials_per_optimizer(self) -> int:
        return self.num_samples * self.seeds

    @property
    def labels(self) -> tuple[str, ...]:
        """The optimizers' labels: their experiment directories and their names in the report."""
        return tuple(label_of(reference) for reference in self.optimizers)

    def references(self) -> dict[str, str]:
        """label -> registered name or import path."""
        return dict(zip(self.labels, self.optimizers, strict=True))

    def lr_range(self, optimizer: str, params: dict[str, Any] | None = None) -> tuple[float, float] | None:
        """The LR range of `optimizer` after lr_min/lr_max (None: the optimizer's own range); `params` is
        its space (default: the built-in optimizer's)."""
        if self.lr_min is None and self.lr_max is None:
            return None
        from optsweep.sweeps.search import spaces

        default = (params if params is not None else spaces.default_params(optimizer)).get("lr")
        if not isinstance(default, (spaces.LogUniform, spaces.Uniform)):
            raise SpecError(
                f"{{lr_min}}/{{lr_max}} need {optimizer}'s lr to be searched over a range; its space has "
                + _literal(repr(default))
            )
        return (
            self.lr_min if self.lr_min is not None else default.low,
            self.lr_max if self.lr_max is not None else default.high,
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


FIELDS: dict[str, Any] = StudySpec.__pydantic_fields__  # name -> pydantic FieldInfo
"""The spec's settings, in order, with their defaults, help and what is allowed."""


def allowed(field: str) -> str:
    return str(FIELDS[field].json_schema_extra["allowed"])


def help_of(field: str) -> str:
    return str(FIELDS[field].description)


def group_of(field: str) -> str:
    return str(FIELDS[field].json_schema_extra["group"])


def default_of(field: str) -> Any:
    info = FIELDS[field]
    return info.default_factory() if info.default_factory is not None else info.default


def label_of(reference: str) -> str:
    """``adam`` -> ``adam``; ``my_pkg.opt:Lion`` -> ``lion``."""
    if ":" in reference:
        return reference.rpartition(":")[2].rpartition(".")[2].lower()
    return reference.strip().lower()


# ------------------------------------------------------------------------------------------- building
def build(
    values: Mapping[str, Any], *, door: Door = "python", where: str | None = None, named_task: bool = True
) -> StudySpec:
    """A checked spec from `values` (settings by field name; the rest take their defaults). Every bad
    value is a `SpecError` spelled for `door` (`where`: the study file, for its messages). `named_task`
    False: `task` only labels a Task object given in Python."""
    try:
        unknown = sorted(str(key) for key in values if key not in FIELDS)
        if unknown:
            raise SpecError(
                f"unknown setting(s) {_literal(', '.join(unknown))}; valid: {_literal(', '.join(FIELDS))}"
            )
        values = dict(values)
        if values.get("smoke"):
            values = {**SMOKE, **values}
        try:
            spec = StudySpec(**values)
        except pydantic.ValidationError as error:
            raise _from_pydantic(error, values) from None
        check(spec, named_task=named_task)
        return _absolute_paths(spec)
    except SpecError as error:
        raise error.for_door(door, where) from None


def _absolute_paths(spec: StudySpec) -> StudySpec:
    """Local paths made absolute (the trials run elsewhere; a rerun may start in another directory)."""
    storage = spec.storage_path
    if not spec.is_remote_storage:
        storage = os.path.abspath(os.path.expanduser(storage))
    data_dir = os.path.abspath(os.path.expanduser(spec.data_dir)) if spec.data_dir else None
    python_path = tuple(os.path.abspath(os.path.expanduser(path)) for path in spec.python_path)
    task, optimizers = absolute_file(spec.task), tuple(absolute_file(o) for o in spec.optimizers)
    resolved = (storage, data_dir, python_path, task, optimizers)
    if resolved == (spec.storage_path, spec.data_dir, spec.python_path, spec.task, spec.optimizers):
        return spec
    return dataclasses.replace(
        spec,
        storage_path=storage,
        data_dir=data_dir,
        python_path=python_path,
        task=task,
        optimizers=optimizers,
    )


def absolute_file(reference: str) -> str:
    """A file reference (``path/to/file.py:attr``) made absolute; names and import paths as they are."""
    where, sep, attribute = reference.rpartition(":")
    if sep and where.endswith(".py"):
        return f"{os.path.abspath(os.path.expanduser(where))}:{attribute}"
    return reference


def spec_values(spec: StudySpec) -> dict[str, Any]:
    return {field: getattr(spec, field) for field in FIELDS}


def _from_pydantic(error: pydantic.ValidationError, values: Mapping[str, Any]) -> SpecError:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if field not in FIELDS:
        return SpecError(_literal(first["msg"]))
    return invalid(field, values.get(field), allowed(field))


def check(spec: StudySpec, *, named_task: bool = True) -> None:
    """The rules that span settings or name built-in things; SpecErrors (spelled for the Python door)."""
    _check_optimizers(spec)
    _check_names("schedules", spec.schedules, catalog.SCHEDULES)
    if spec.log_to:
        _check_names("log_to", spec.log_to, catalog.TRACKING_BACKENDS)
    if named_task and ":" not in spec.task and spec.task not in catalog.TASKS:
        raise SpecError(
            f"unknown task {_literal(repr(spec.task))} in {{task}}; built-in: {', '.join(catalog.TASKS)}, "
            "or an import path my_pkg.tasks:build_task / path/to/my_task.py:build_task"
        )
    if "model" in spec.task_args and spec.task in catalog.DATASET_TASKS:
        model = spec.task_args["model"]
        if model not in catalog.MODELS:
            raise SpecError(
                f"unknown model {_literal(shown(model))} in {{model}}; valid: {', '.join(catalog.MODELS)}"
            )
    if spec.workers_per_trial < catalog.MIN_WORKERS[spec.mode]:  # zero1
        raise SpecError(
            "{mode} zero1 shards the optimizer state across a trial's workers: it needs {workers_per_trial} "
            f">= 2 (got {spec.workers_per_trial}); use {{mode}} sync for one worker"
        )
    if spec.staleness_aware_lr and spec.mode != "async-ps":
        raise SpecError(f"{{staleness_aware_lr}} is for {{mode}} async-ps (got {{mode}} {spec.mode})")
    if spec.lr_min is not None and spec.lr_max is not None and spec.lr_min > spec.lr_max:
        raise SpecError(
            f"{{lr_min}} {exact_number(spec.lr_min)} is greater than {{lr_max}} "
            f"{exact_number(spec.lr_max)}: the LR range must have lr-min <= lr-max"
        )
    if (spec.lr_min is None) != (spec.lr_max is None):
        for label, reference in spec.references().items():
            if ":" not in reference and label not in spec.search_spaces:
                check_lr_range(spec, label)
    if spec.data_dir is not None and os.path.isfile(os.path.expanduser(spec.data_dir)):
        raise SpecError(
            f"{{data_dir}} {_literal(spec.data_dir)} is a file: it must be a directory (or not exist yet)"
        )
    if spec.tracking_uri is not None and "mlflow" not in spec.log_to:
        raise SpecError(
            f"{{tracking_uri}} {_literal(spec.tracking_uri)} is for MLflow: add mlflow to {{log_to}}"
        )
    if spec.tracking_uri is not None:
        _check_tracking_uri(spec.tracking_uri)
    if spec.tracking_uri is None and "mlflow" in spec.log_to and spec.is_remote_storage:
        raise SpecError(
            f"{{log_to}} mlflow with {{storage_path}} {_literal(spec.storage_path)} needs {{tracking_uri}} "
            "(an MLflow server): the default store is a file in a local experiment directory"
        )
    _check_search_spaces(spec)


def check_lr_range(spec: StudySpec, label: str, params: dict[str, Any] | None = None) -> None:
    """lr_min <= lr_max once the end not given is `label`'s own (`params`: its space; default: the
    built-in optimizer's)."""
    low, high = spec.lr_range(label, params) or (0.0, 1.0)
    if low > high:
        raise SpecError(
            f"{{lr_min}} {exact_number(low)} is greater than {{lr_max}} {exact_number(high)} (the other "
            f"end is {label}'s default): the LR range must have lr-min <= lr-max"
        )


def _check_optimizers(spec: StudySpec) -> None:
    if not spec.optimizers:
        raise SpecError(f"{{optimizers}} is empty: give at least one of {', '.join(catalog.OPTIMIZERS)}")
    for reference in spec.optimizers:
        if ":" not in reference and reference.strip().lower() not in catalog.OPTIMIZERS:
            raise SpecError(
                f"unknown optimizer {_literal(repr(reference))} in {{optimizers}}; valid: "
                f"{', '.join(catalog.OPTIMIZERS)}, or an import path (my_pkg.opt:Lion)"
            )
        if not re.fullmatch(LABEL_PATTERN, label_of(reference)):
            raise SpecError(
                f"optimizer label {_literal(repr(label_of(reference)))} "
                f"(from {_literal(repr(reference))}) is invalid: use lowercase letters, digits, '_', '.' "
                "and '-'"
            )
    labels = spec.labels
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SpecError(f"{{optimizers}} lists {', '.join(duplicates)} more than once")


_NOUNS = {"schedules": "schedule", "log_to": "tracking backend"}


def _check_names(field: str, values: tuple[str, ...], valid: tuple[str, ...]) -> None:
    if not values:
        raise SpecError(f"{{{field}}} is empty: give at least one of {', '.join(valid)}")
    for value in values:
        if value not in valid:
            raise SpecError(
                f"unknown {_NOUNS[field]} {_literal(repr(value))} in {{{field}}}; valid: {', '.join(valid)}"
            )
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise SpecError(f"{{{field}}} lists {', '.join(duplicates)} more than once")


def _check_search_spaces(spec: StudySpec) -> None:
    labels = spec.labels
    for label, space in spec.search_spaces.items():
        if label not in labels:
            hint = f" (labels are lowercase: {label.lower()})" if str(label).lower() in labels else ""
            raise SpecError(
                f"{{search_spaces}} has a space for {_literal(repr(label))}, which is none of the optimizers "
                f"({', '.join(labels)}){hint}"
            )
        if not isinstance(space, Mapping) or not space:
            raise SpecError(
                f"{{search_spaces}} for {label} must map hyperparameter names to distributions, got "
                + _literal(repr(space))
            )


TRACKING_URI_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")


def _check_tracking_uri(uri: str) -> None:
    """A tracking URI MLflow can use: http(s)://host..., sqlite:///path, file:/path or a database URL."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme.split("+")[0] not in TRACKING_URI_SCHEMES or not uri.split("://", 1)[1]:
        raise invalid(
            "tracking_uri",
            uri,
            "a URI such as http://host:5000, sqlite:///path/mlflow.db or file:///path/mlruns",
        )


def exact_number(value: float) -> str:
    """Shortest exact spelling: 0.10000001 must not be shown as 0.1 next to a real 0.1."""
    return repr(float(value)).removesuffix(".0")
