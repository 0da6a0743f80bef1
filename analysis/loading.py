"""Turn a stored optsweep experiment into two tables: one row per trial, and per-epoch curves.

Status of a trial (the project's vocabulary, decided here once):

- ``error``: Tune says ERROR, or (when the experiment state is unreadable) the trial left an
  ``error.txt`` and did not finish. A trial that failed, was retried by Tune and then finished has
  an ``error.txt`` too, but Tune's TERMINATED status is trusted over it.
- ``diverged``: a result line says ``diverged: true``.
- ``completed``: it reported ``settings.max_epochs`` epochs (without ``max_epochs``: its last line is
  not marked ``done``, which Tune adds to the last result of a trial it stopped).
- ``stopped_early``: Tune terminated it before that (the ASHA scheduler).
- ``incomplete``: PENDING/RUNNING/PAUSED when the driver stopped; listed, never counted.

A diverged trial's last line holds finite sentinels (losses 1e9, the target metric the worst value
of its mode; val_acc 0 in older experiments), not measurements, so its best value of the target
(e.g. best_val_acc) only looks at the epochs before it diverged, and its final_* and test_* are NaN.
The sentinel (±DIVERGED_VALUE) is never a value in any table: wherever a loss or metric holds it, the
table holds NaN.

One selection rule: the validation metric picks the epoch. A trial's best_<target key> is its best
validation value over its epochs, ``best_epoch`` the first epoch that reached it, and its test_<m>
columns are read at that same epoch (not at its last one).

Identity: ``config_id`` is ``<optimizer>-cNN`` with NN = the config's ``__configuration`` number + 1,
the same fused or not and for a confirmation trial as for the search configuration it confirms;
trials without that number (experiments from before it) are numbered by their first trial id.
``configuration`` holds the number itself and ``stage`` the trial's stage (``search`` when its config
names none). A config with a word where a number belongs is refused (`config_check.BadConfigError`).

The metric columns follow the experiment's target (`analysis.target_of`): for the default target
(val_acc, max) they are best_val_acc, final_val_acc, final_train_loss and test_acc, as they always
were; for Target("perplexity", "min") best_val_perplexity (the lowest), final_val_perplexity, ...
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from optsweep.analysis import config_check, fused_groups
from optsweep.analysis.target import attach, search_of, target_of
from optsweep.analysis.tune_files import (
    NotAnExperimentError,
    RawTrial,
    find_tune_experiments,
    read_tune_experiment,
)
from optsweep.vocabulary import (
    COMPLETED,
    CONFIGURATION_KEY,
    DIVERGED,
    DIVERGED_FLAG,
    DIVERGED_REASON,
    EPOCH,
    EPOCH_TIME_S,
    ERROR,
    INCOMPLETE,
    LR,
    NODE_ID,
    SAMPLES_PER_S,
    SEARCH,
    STAGE_COLUMN,
    STAGE_KEY,
    STOPPED_EARLY,
    TEST_LOSS,
    TEST_PREFIX,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_PREFIX,
    Target,
    config_id,
    is_measurement,
    test_key,
    val_key,
)
from optsweep.vocabulary import FINISHED as FINISHED  # re-exported: the statuses used to live here
from optsweep.vocabulary import STATUSES as STATUSES

FIXED_HPARAMS = ("lr", "weight_decay", "schedule")
FINAL_TRAIN_LOSS = "final_train_loss"
BEST_EPOCH = "best_epoch"
CONFIGURATION_COLUMN = "configuration"
SEARCH_ATTR = "search"
"""A trials table's ``attrs`` key of the study's search (study.json's ``search``; None if unrecorded)."""
_NOT_HPARAMS = {"optimizer", "seed", "settings"}
_LEADING_SETTINGS = ("dataset", "model", "max_epochs")
_TAIL_COLUMNS = (DIVERGED_REASON, "tune_status", "error_message", "trial_dir")
_CURVE_HEAD = ("trial_id", "optimizer", "config_id", "seed", "status", EPOCH, TRAIN_LOSS, VAL_LOSS)
_CURVE_TAIL = ("epoch_lr", EPOCH_TIME_S, SAMPLES_PER_S, DIVERGED_FLAG, "time_total_s", NODE_ID, STAGE_COLUMN)
_UNFINISHED_TUNE_STATUSES = {"PENDING", "RUNNING", "PAUSED"}


def metric_columns(target: Target, metrics: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The trials table's result columns, between the hyperparameters and config_id: status,
    epochs, best_<target key>, best_epoch, final_<target key>, final_train_loss, test_<m> (at the best
    epoch) for the target and then every other task metric m in `metrics`, time_s, node_id."""
    tests = [target.test_key, *(test_key(m) for m in metrics if m != target.metric)]
    best = [target.best_key, BEST_EPOCH, target.final_key, FINAL_TRAIN_LOSS]
    return ["status", "epochs", *best, *tests, "time_s", NODE_ID]


def curve_columns(
    target: Target, metrics: list[str] | tuple[str, ...] = (), test_loss: bool = False
) -> list[str]:
    """The curves table's columns: val_<m>, test_<m> of the target metric, then of every other
    task metric in `metrics`, after the losses (test_loss only if some trial reported it)."""
    pairs = [key for m in _target_first(target, metrics) for key in (val_key(m), test_key(m))]
    return [*_CURVE_HEAD, *([TEST_LOSS] if test_loss else []), *pairs, *_CURVE_TAIL]


@dataclass
class Experiment:
    """Both tables of one experiment directory."""

    trials: pd.DataFrame
    curves: pd.DataFrame


def load(experiment_dir: str | os.PathLike[str], *, target: Target | None = None) -> pd.DataFrame:
    """One row per trial (every planned trial once, finished or not), columns in the order
    trial_id, optimizer, seed, lr, weight_decay, schedule, <other hyperparameters, sorted>,
    status, epochs, best_val_acc, final_val_acc, final_train_loss, test_acc, <test_<m> of the
    other task metrics>, time_s, node_id, config_id, <run settings: dataset, model, max_epochs,
    ...>, tune_status, error_message, trial_dir (metric names for the default target; see
    `metric_columns`), with configuration and stage right after config_id.

    `target` defaults to the one the experiment recorded (`analysis.target_of`); the table
    carries it in ``attrs["target"]`` for `summarize` and the plots, and the study's search algorithm
    in ``attrs["search"]`` for the caveats.
    Raises FileNotFoundError for a missing directory, NotAnExperimentError for a directory
    without any Ray Tune experiment below it and BadConfigError for a trial whose config holds a
    non-number where a number belongs.
    """
    return read_experiment(experiment_dir, target=target).trials


def curves(experiment_dir: str | os.PathLike[str], *, target: Target | None = None) -> pd.DataFrame:
    """Per-epoch metrics of every trial that reported any, one row per (trial, epoch), with
    val_<m> and test_<m> of every task metric m reported (see `curve_columns`).

    ``epoch_lr`` is the learning rate in effect during the epoch (``lr`` in result.json; renamed
    so it cannot be confused with the configured ``lr`` of the trials table). On a diverged
    epoch the losses and metrics are NaN instead of the loop's sentinels.
    """
    return read_experiment(experiment_dir, target=target).curves


def read_experiment(experiment_dir: str | os.PathLike[str], *, target: Target | None = None) -> Experiment:
    """Read every Tune experiment below `experiment_dir` into the trials and curves tables, both
    carrying the target (`target`, or the experiment's own)."""
    root = Path(experiment_dir)
    if not root.exists():
        raise FileNotFoundError(f"no such experiment directory: {root}")
    if not root.is_dir():
        raise NotAnExperimentError(f"not an experiment directory (not a directory at all): {root}")
    tune_dirs = find_tune_experiments(root)
    if not tune_dirs:
        raise NotAnExperimentError(f"not an experiment directory (no Ray Tune experiment below it): {root}")
    target = target_of(root) if target is None else target
    # A fused group's trial counts as its members, each a trial as if it had run alone.
    raw = [
        member
        for tune_dir in tune_dirs
        for trial in read_tune_experiment(tune_dir)
        for member in fused_groups.expand(trial)
    ]
    _check_written_by_optsweep(root, raw)
    config_check.check((trial.trial_id, trial.config) for trial in raw)
    for trial in raw:
        trial.results = _one_line_per_epoch(trial.results)
    metrics = _reported_metrics(raw)
    rows = [_trial_row(trial, root, target, metrics) for trial in raw]
    _assign_config_ids(rows)
    trials = attach(_trials_frame(rows, target, metrics), target)
    trials.attrs[SEARCH_ATTR] = search_of(root)
    return Experiment(trials=trials, curves=attach(_curves_frame(raw, rows, target, metrics), target))


OPTSWEEP_CONFIG_KEYS = ("optimizer", "settings")
"""Every optsweep trial config has these; a Ray Tune experiment of other code does not."""


def _check_written_by_optsweep(root: Path, raw: list[RawTrial]) -> None:
    """Refuse a foreign Tune experiment (its report would be meaningless); warn about foreign trials."""
    foreign = [t for t in raw if t.config and not all(key in t.config for key in OPTSWEEP_CONFIG_KEYS)]
    if foreign and len(foreign) == len([t for t in raw if t.config]):
        raise NotAnExperimentError(
            f"not an optsweep experiment: the Ray Tune trials below {root} have no "
            f"{' and '.join(repr(k) for k in OPTSWEEP_CONFIG_KEYS)} in their configs (written by other code)"
        )
    if foreign:
        warnings.warn(
            f"{len(foreign)} trial(s) without {' and '.join(repr(k) for k in OPTSWEEP_CONFIG_KEYS)} in their "
            f"config (not written by optsweep), e.g. {foreign[0].trial_id}; listed, but may not compare",
            stacklevel=3,
        )


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a trial config: every top-level key except optimizer, seed,
    settings and Tune's own ``__*`` keys. Non-scalar values become JSON strings so that a
    configuration stays hashable."""
    return {
        key: _scalar(value)
        for key, value in config.items()
        if key not in _NOT_HPARAMS and not key.startswith("__")
    }


def classify(
    tune_status: str | None,
    has_error_file: bool,
    diverged: bool,
    reached_end: bool,
    last_done: bool,
) -> str:
    """The trial status (see the module docstring for the rules)."""
    if tune_status == "ERROR":
        return ERROR
    known = tune_status in _UNFINISHED_TUNE_STATUSES or tune_status == "TERMINATED"
    if not known and has_error_file and not (diverged or reached_end):
        return ERROR
    if diverged:
        return DIVERGED
    if reached_end:
        return COMPLETED
    if tune_status == "TERMINATED":
        return STOPPED_EARLY
    if tune_status in _UNFINISHED_TUNE_STATUSES:
        return INCOMPLETE
    # No readable state: Tune writes done=true on the last line of a trial it stopped.
    return STOPPED_EARLY if last_done else INCOMPLETE


def _trial_row(trial: RawTrial, root: Path, target: Target, metrics: list[str]) -> dict[str, Any]:
    config = trial.config
    settings = config.get("settings") if isinstance(config.get("settings"), dict) else {}
    max_epochs = _int_or_none(settings.get("max_epochs"))
    results = trial.results
    last = results[-1] if results else {}
    diverged = any(r.get(DIVERGED_FLAG) is True for r in results)
    epochs = _epoch_of(last) or 0
    if max_epochs is not None:
        reached_end = epochs >= max_epochs
    else:
        reached_end = bool(results) and last.get("done") is not True
    status = classify(
        trial.tune_status,
        trial.error_message is not None,
        diverged,
        reached_end,
        last.get("done") is True,
    )
    clean = [r for r in results if r.get(DIVERGED_FLAG) is not True]
    final = None if diverged or not results else last
    best_line = _best_line(clean, target)
    chosen = None if diverged else best_line  # a diverged trial's model is gone: nothing to test

    def at(line: dict[str, Any] | None, key: str) -> float:
        return _nan_if_none(_measured(line.get(key))) if line else math.nan

    tests = {key: at(chosen, key) for key in metric_columns(target, metrics) if key.startswith(TEST_PREFIX)}
    configuration = config.get(CONFIGURATION_KEY)
    return {
        "trial_id": trial.trial_id,
        "optimizer": str(config.get("optimizer", trial.tune_dir.name)),
        # Random search sets `seed`; Optuna's Repeater numbers the seeds of a configuration instead.
        "seed": config.get("seed", config.get("__trial_index__")),
        "hparams": hyperparameters(config),
        "status": status,
        "epochs": epochs,
        target.best_key: at(best_line, target.key),
        BEST_EPOCH: _epoch_of(best_line) if best_line else None,
        target.final_key: at(final, target.key),
        FINAL_TRAIN_LOSS: at(final, TRAIN_LOSS),
        **tests,
        "time_s": _nan_if_none(_finite(last.get("time_total_s"))),
        "node_id": last.get("node_id"),
        CONFIGURATION_COLUMN: configuration if isinstance(configuration, int) else None,
        STAGE_COLUMN: config.get(STAGE_KEY) or SEARCH,
        "settings": {key: _scalar(value) for key, value in settings.items()},
        DIVERGED_REASON: next(
            (r.get(DIVERGED_REASON) for r in results if r.get(DIVERGED_FLAG) is True), None
        ),
        "tune_status": trial.tune_status,
        "error_message": trial.error_message,
        "trial_dir": str(trial.trial_dir.relative_to(root)) if trial.trial_dir else None,
    }


def _best_line(lines: list[dict[str, Any]], target: Target) -> dict[str, Any] | None:
    """The first result line with the best measured value of the target (None if none has one)."""
    best = None
    for line in lines:
        value = _measured(line.get(target.key))
        if value is not None and (best is None or target.better(value, best[0])):
            best = (value, line)
    return best[1] if best else None


def _assign_config_ids(rows: list[dict[str, Any]]) -> None:
    """config_id from each trial's configuration number; a trial without one gets the id of a numbered
    trial with the same hyperparameters, else the next free number in order of first trial id."""
    ids: dict[tuple[str, str], str] = {}
    used: dict[str, set[str]] = {}

    def key(row: dict[str, Any]) -> tuple[str, str]:
        return row["optimizer"], json.dumps(row["hparams"], sort_keys=True, default=str)

    for row in rows:
        if row[CONFIGURATION_COLUMN] is not None:
            row["config_id"] = config_id(row["optimizer"], row[CONFIGURATION_COLUMN])
            ids.setdefault(key(row), row["config_id"])
            used.setdefault(row["optimizer"], set()).add(row["config_id"])
    counts: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: (r["optimizer"], r["trial_id"])):
        if row[CONFIGURATION_COLUMN] is not None:
            continue
        if key(row) not in ids:
            taken = used.setdefault(row["optimizer"], set())
            number = counts.get(row["optimizer"], 0)
            while config_id(row["optimizer"], number) in taken:
                number += 1
            counts[row["optimizer"]] = number + 1
            ids[key(row)] = config_id(row["optimizer"], number)
            taken.add(ids[key(row)])
        row["config_id"] = ids[key(row)]


def _trials_frame(rows: list[dict[str, Any]], target: Target, metrics: list[str]) -> pd.DataFrame:
    result_columns = metric_columns(target, metrics)
    hparam_names = sorted({k for r in rows for k in r["hparams"]} - set(FIXED_HPARAMS))
    hparam_columns = [*FIXED_HPARAMS, *hparam_names]
    setting_names = {k for r in rows for k in r["settings"]}
    setting_order = [k for k in _LEADING_SETTINGS if k in setting_names]
    setting_order += sorted(setting_names - set(_LEADING_SETTINGS))
    identity = ["config_id", CONFIGURATION_COLUMN, STAGE_COLUMN]
    head = ["trial_id", "optimizer", "seed", *hparam_columns, *result_columns, *identity]
    # A run setting whose name is already a column keeps a prefix rather than overwriting it.
    setting_columns = {k: (f"settings_{k}" if k in head else k) for k in setting_order}
    records = []
    for row in sorted(rows, key=lambda r: (r["optimizer"], r["trial_id"])):
        record = {c: row[c] for c in ("trial_id", "optimizer", "seed", *result_columns, *identity)}
        record.update({c: row["hparams"].get(c) for c in hparam_columns})
        record.update({setting_columns[k]: row["settings"].get(k) for k in setting_order})
        record.update({c: row[c] for c in _TAIL_COLUMNS})
        records.append(record)
    columns = [*head, *setting_columns.values(), *_TAIL_COLUMNS]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["seed"] = _maybe_int(frame["seed"])
    frame["epochs"] = frame["epochs"].astype("int64")
    frame[BEST_EPOCH] = frame[BEST_EPOCH].astype("Int64")
    frame[CONFIGURATION_COLUMN] = frame[CONFIGURATION_COLUMN].astype("Int64")
    for column in result_columns:
        if column not in ("status", "epochs", BEST_EPOCH, NODE_ID):
            frame[column] = frame[column].astype("float64")
    return frame


def _curves_frame(
    raw: list[RawTrial], rows: list[dict[str, Any]], target: Target, metrics: list[str]
) -> pd.DataFrame:
    test_loss = any(TEST_LOSS in result for trial in raw for result in trial.results)
    columns = curve_columns(target, metrics, test_loss)
    # Every loss and metric of a diverged line is a sentinel, not a measurement.
    measured = [c for c in columns if c.startswith((VAL_PREFIX, TEST_PREFIX)) or c == TRAIN_LOSS]
    records = []
    for trial, row in zip(raw, rows, strict=True):
        meta = {key: row[key] for key in ("optimizer", "config_id", "seed", "status", STAGE_COLUMN)}
        for result in trial.results:
            epoch = _epoch_of(result)
            if epoch is None:
                continue
            diverged = result.get(DIVERGED_FLAG) is True
            record = {"trial_id": trial.trial_id, **meta, EPOCH: epoch, DIVERGED_FLAG: diverged}
            for key in (*measured, EPOCH_TIME_S, SAMPLES_PER_S):
                value = _measured(result.get(key)) if key in measured else _finite(result.get(key))
                record[key] = math.nan if value is None or (diverged and key in measured) else value
            record["epoch_lr"] = _nan_if_none(_finite(result.get(LR)))
            record["time_total_s"] = _nan_if_none(_finite(result.get("time_total_s")))
            record[NODE_ID] = result.get(NODE_ID)
            records.append(record)
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame = frame.sort_values(["optimizer", "trial_id", "epoch"], kind="stable").reset_index(drop=True)
    frame["seed"] = _maybe_int(frame["seed"])
    frame["epoch"] = frame["epoch"].astype("int64")
    frame[DIVERGED_FLAG] = frame[DIVERGED_FLAG].astype(bool)
    return frame


def _reported_metrics(raw: list[RawTrial]) -> list[str]:
    """The task metrics m of every val_<m> / test_<m> a result line reports (losses aside), sorted."""
    names = set()
    for trial in raw:
        for result in trial.results:
            for key, value in result.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    for prefix in (VAL_PREFIX, TEST_PREFIX):
                        if key.startswith(prefix) and len(key) > len(prefix):
                            names.add(key[len(prefix) :])
    return sorted(names - {"loss"})


def _target_first(target: Target, metrics: list[str] | tuple[str, ...]) -> list[str]:
    return [target.metric, *(m for m in metrics if m != target.metric)]


def _one_line_per_epoch(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result lines in epoch order, one per epoch. A trial restored from a checkpoint repeats the
    epochs after that checkpoint; the later line (the run that went on) wins."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for result in results:
        epoch = _epoch_of(result)
        if epoch is not None:
            by_epoch[epoch] = result
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _epoch_of(result: dict[str, Any]) -> int | None:
    epoch = result.get("epoch", result.get("training_iteration"))
    return _int_or_none(epoch)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _measured(value: Any) -> float | None:
    """A loss or metric as measured: None for a non-number, a non-finite value or the diverged sentinel."""
    return float(value) if is_measurement(value) else None


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _maybe_int(column: pd.Series) -> pd.Series:
    """Integer-valued columns (seeds) as nullable integers, anything else untouched."""
    values = column.dropna()
    if all(_int_or_none(v) is not None for v in values):
        return column.astype("Int64")
    return column
