"""The confirmation stage: each optimizer's chosen configuration retrained on fresh seeds, to the full budget.

The search (`sweeps.runner.tuner`) tunes each optimizer and chooses its best configuration by the mean
over its search seeds; that mean is the largest of many noisy means, so it overstates the configuration
(the winner's curse). The confirmation retrains each optimizer's chosen configuration on
`confirm_seeds` fresh seeds (`CONFIRM_SEED_BASE + i`, never used by a search), every seed for the full
epochs (no early stopping; a diverged run still ends as diverged), the same count for every optimizer.
The search decides *which* configuration; the confirmation measures it, and the report's headline
numbers come from it. An optimizer's choice depends on its own search only. The confirmation starts once
the search has ended (`run`), every optimizer's chosen configuration in one Tune experiment.

On storage (the experiment directory):
- `confirmation.json`: the seeds and each optimizer's choice (its configuration's number, config id,
  hyperparameters and search mean). Written (atomically) once the search has ended, before the
  confirmation starts, and read back on every rerun, never recomputed (a resumed study confirms what its
  search chose, whatever the files say since); a rerun does not run the search again.
- `confirm/`: the confirmation as one Tune experiment. Its trials' configs name the optimizer, keep the
  search configuration's `__configuration` number and carry `__stage: confirm` (`STAGE_KEY`), so the
  analysis files them under the optimizer and the configuration. An optimizer's seeds train as fused
  groups where its search fused (as few groups as its share of the trial slots allows), otherwise as one
  trial each.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.fs
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from optsweep import analysis, atomic_files
from optsweep.errors import OptsweepError
from optsweep.sweeps.record import layout
from optsweep.sweeps.runner import fusion, safeguards, tuner
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.search.study_search import PerOptimizerSearch, PresetTrials
from optsweep.sweeps.spec import StudySpec
from optsweep.vocabulary import (
    CONFIGURATION_KEY,
    CONFIRM,
    CONFIRM_SEED_BASE,
    MEMBERS_KEY,
    SEARCH,
    STAGE_COLUMN,
    STAGE_KEY,
    Target,
    member_configs,
)

if TYPE_CHECKING:
    from optsweep.sweeps.runner.plan import Plan

CHOICE_FILE = "confirmation.json"
_NOT_HYPERPARAMETERS = ("optimizer", "seed", "settings")


def seeds(count: int) -> list[int]:
    """The confirmation seeds of a study with `count` of them (see `CONFIRM_SEED_BASE`)."""
    return [CONFIRM_SEED_BASE + i for i in range(count)]


# ------------------------------------------------------------------------------------- the choice
def read_choice(experiment_dir: str) -> dict[str, Any] | None:
    """The recorded choice, or None before any optimizer's search has finished (or without a confirmation
    stage)."""
    raw = atomic_files.read_bytes_at(f"{_absolute(experiment_dir)}/{CHOICE_FILE}")
    if raw is None:
        return None
    try:
        choice = json.loads(raw.decode())
        if not isinstance(choice, dict) or not isinstance(choice.get("optimizers"), dict):
            raise ValueError("not a choice record")
    except (UnicodeDecodeError, ValueError):
        raise OptsweepError(
            f"{experiment_dir}/{CHOICE_FILE} is damaged; move it aside and rerun to choose again from the "
            "search's trials"
        ) from None
    return choice


def write_choice(experiment_dir: str, choice: dict[str, Any]) -> None:
    """Atomically (local: temp file and rename; object stores replace whole objects)."""
    payload = json.dumps(choice, indent=2).encode()
    fs, root = pyarrow.fs.FileSystem.from_uri(_absolute(experiment_dir))
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        atomic_files.write_bytes(Path(root) / CHOICE_FILE, payload, durable=True)
        return
    with fs.open_output_stream(f"{root}/{CHOICE_FILE}") as f:
        f.write(payload)


def choose(tune_dir: str | Path, labels: list[str], target: Target) -> dict[str, list[dict[str, Any]]]:
    """Each optimizer's chosen configuration from the finished search in its local Tune experiment
    directory: by label, a list of one (empty when no configuration of it finished its search)."""
    root = Path(tune_dir)
    trials = analysis.load(root, target=target)
    if STAGE_COLUMN in trials.columns:
        trials = trials[trials[STAGE_COLUMN].fillna(SEARCH) == SEARCH]
    chosen = analysis.chosen_configurations(trials, target=target, top_k=1)
    return {
        label: [_entry(root, trials, row) for _, row in chosen[chosen["optimizer"] == label].iterrows()]
        for label in labels
    }


def _entry(root: Path, trials: pd.DataFrame, row: pd.Series) -> dict[str, Any]:
    """A chosen configuration as recorded: its hyperparameters exactly as its search trials had them
    (read from a trial's own config, not from the table's rounded or stringified columns)."""
    config = _trial_config(root, trials[trials["config_id"] == row["config_id"]])
    return {
        "rank": int(row["rank"]),
        "configuration": int(config[CONFIGURATION_KEY]),
        "config_id": str(row["config_id"]),
        "hyperparameters": {
            key: value
            for key, value in config.items()
            if key not in _NOT_HYPERPARAMETERS and not key.startswith("__")
        },
        "search_mean": _number(row["search_mean"]),
        "search_seeds": int(row["n_seeds"]),
    }


def _trial_config(root: Path, rows: pd.DataFrame) -> dict[str, Any]:
    """The config of one search trial of a configuration (a fused group's member: its own config)."""
    for _, trial in rows.iterrows():
        if not isinstance(trial.get("trial_dir"), str):
            continue
        params = root / trial["trial_dir"] / "params.json"
        try:
            config = json.loads(params.read_text())
        except (OSError, ValueError):
            continue
        members = member_configs(config)
        if members:
            index = int(str(trial["trial_id"]).rsplit("-", 1)[1])
            config = members[index]
        if CONFIGURATION_KEY in config:
            return config
    raise ValueError(f"no search trial of {rows['config_id'].iloc[0]} left its config in {root}")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


# -------------------------------------------------------------------------------------- the stage
def run(plan: Plan) -> None:
    """After the search: each optimizer's choice recorded (once: a rerun reads it back), then every
    chosen configuration retrained on the fresh seeds in one Tune experiment (`<experiment>/confirm/`),
    created or resumed."""
    args, target = plan.args, plan.task.target
    choice = read_choice(args.experiment_dir)
    unrecorded = [label for label in args.labels if choice is None or label not in choice["optimizers"]]
    if unrecorded:
        choice = _record(args, unrecorded, target)
    assert choice is not None
    chosen = {label: choice["optimizers"][label] for label in args.labels}
    for label, entries in chosen.items():
        if not entries:
            print(f"{label}: no configuration finished its search; nothing to confirm.", flush=True)
    if not any(chosen.values()):
        return
    trainable = tuner.study_trainable(plan)

    def create() -> tune.Tuner:
        trials: dict[str, list[dict[str, Any]]] = {}
        runs: dict[str, int] = {}
        for contender in plan.contenders:
            entries = chosen[contender.label]
            if entries:
                trials[contender.label], runs[contender.label] = _optimizer_trials(
                    plan, contender, entries, choice["seeds"]
                )
        return _new_tuner(plan, trainable, trials, runs)

    tuner.run_experiment(plan, layout.CONFIRM, trainable, create)


def _record(args: StudySpec, labels: list[str], target: Target) -> dict[str, Any]:
    """Choose each of `labels`' configuration from the search and add them to the choice file."""
    tune_dir = layout.search_dir(args.experiment_dir)
    if args.is_remote_storage:
        local = Path(tempfile.mkdtemp(prefix="optsweep-choice-")) / layout.SEARCH
        pyarrow.fs.copy_files(tune_dir, str(local))
        tune_dir = str(local)
    choice = read_choice(args.experiment_dir) or {
        "seeds": seeds(args.confirm_seeds),
        "target": target.to_json(),
        "optimizers": {},
    }
    for label, entries in choose(tune_dir, labels, target).items():
        choice["optimizers"][label] = entries
    write_choice(args.experiment_dir, choice)
    return choice


def _optimizer_trials(
    plan: Plan, contender: Contender, chosen: list[dict[str, Any]], seed_list: list[int]
) -> tuple[list[dict[str, Any]], int]:
    """An optimizer's confirmation trials (fused groups where its search fused, as few as its share of the
    trial slots allows) and how many runs they train."""
    args, label = plan.args, contender.label
    # No early stopping here, so no scheduler decisions to wait for (multi-worker trials under ASHA would).
    settings = tuner.trial_settings(args, contender, scheduler_decisions=None)
    members = [
        {
            **entry["hyperparameters"],
            CONFIGURATION_KEY: entry["configuration"],
            "seed": seed,
            STAGE_KEY: CONFIRM,
        }
        for entry in chosen
        for seed in seed_list
    ]
    decision = plan.fusion.get(label)
    parallel = min(tuner.optimizer_share(args), args.max_concurrent or args.confirm_seeds or 1)
    groups = (
        fusion.pack_members(label, members, settings, plan.task, decision.group_size, parallel)
        if decision is not None and decision.fused
        else []
    )
    if groups:
        configs = [
            {"optimizer": label, STAGE_KEY: CONFIRM, MEMBERS_KEY: group, "settings": settings}
            for group in groups
        ]
    else:
        configs = [{"optimizer": label, **member, "settings": settings} for member in members]
    layout_text = f" in {len(groups)} fused group(s)" if groups else ""
    which = ", ".join(str(entry["config_id"]) for entry in chosen)
    print(
        f"Confirming {label}: {which} on {len(seed_list)} fresh seeds ({seed_list[0]}..{seed_list[-1]}) "
        f"x {args.max_epochs} epochs{layout_text}.",
        flush=True,
    )
    return configs, len(members)


def _new_tuner(
    plan: Plan, trainable: Any, trials: dict[str, list[dict[str, Any]]], runs: dict[str, int]
) -> tune.Tuner:
    """`trials`: each optimizer's trial configs; `runs`: how many runs they train (a fused group counts as
    its members)."""
    args, target = plan.args, plan.task.target
    searchers: dict[str, Searcher] = {label: PresetTrials(configs) for label, configs in trials.items()}
    counts = {label: len(configs) for label, configs in trials.items()}
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=target.key,
            mode=target.mode,
            scheduler=FIFOScheduler(),
            search_alg=PerOptimizerSearch(searchers, counts, max_live=args.max_concurrent),
            num_samples=sum(counts.values()),
            reuse_actors=args.workers_per_trial == 1,
        ),
        run_config=tuner.run_config(args, layout.CONFIRM, _callbacks(args, runs, target)),
    )


def _callbacks(args: StudySpec, totals: dict[str, int], target: Target) -> list[tune.Callback]:
    return [
        *tuner.progress_lines(args, target, stage=layout.CONFIRM, totals=totals),
        *tuner.stage_callbacks(args),
        *safeguards.callbacks(args),
    ]


def _absolute(experiment_dir: str) -> str:
    return experiment_dir if "://" in experiment_dir else str(Path(experiment_dir).absolute())
