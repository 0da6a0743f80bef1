"""The confirmation stage: each optimizer's chosen configuration retrained on fresh seeds, to the full budget.

The search stage (`sweeps.runner.study`) tunes each optimizer and chooses its best configuration by the mean
over its search seeds; that mean is the largest of many noisy means, so it overstates the configuration
(the winner's curse). The confirmation retrains each optimizer's chosen configuration on
`confirm_seeds` fresh seeds (`CONFIRM_SEED_BASE + i`, never used by a search), every seed for the full
epochs (no early stopping; a diverged run still ends as diverged), the same count for every optimizer.
The search decides *which* configuration; the confirmation measures it, and the report's headline
numbers come from it. An optimizer's choice depends on its own search only; its confirmation runs in its
runner's thread (`run_stages`) once no other optimizer's search waits for a trial slot (`SearchesDone`).

On storage (the experiment directory):
- `confirmation.json`: the seeds and, per optimizer whose search has finished, its choice (its
  configuration's number, config id, hyperparameters and search mean). An optimizer's entry is written
  (atomically) before its confirmation starts and read back on every rerun, never recomputed (a resumed
  study confirms what its search chose, whatever the files say since); a rerun does not run the search
  of an optimizer with an entry again.
- `<optimizer>-confirm/`: an optimizer's confirmation as its own Tune experiment. Its trials' configs
  name the optimizer, keep the search configuration's `__configuration` number and carry
  `__stage: confirm` (`STAGE_KEY`), so the analysis files them under the optimizer and the configuration.
  Its seeds train as fused groups where the optimizer's search fused (as few groups as the optimizer's
  share of the trial slots allows), otherwise as one trial each.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.fs
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from optsweep import analysis, atomic_files
from optsweep.errors import OptsweepError
from optsweep.sweeps.cluster import feasibility, interrupts, retention, storage_guard
from optsweep.sweeps.cluster.storage_guard import StorageGuard
from optsweep.sweeps.monitoring import tracking
from optsweep.sweeps.monitoring.progress import ProgressLine
from optsweep.sweeps.runner import fusion, safeguards, side_by_side
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.trial import run_trial, trial_resources
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
SUFFIX = "-confirm"
_NOT_HYPERPARAMETERS = ("optimizer", "seed", "settings")


def seeds(count: int) -> list[int]:
    """The confirmation seeds of a study with `count` of them (see `CONFIRM_SEED_BASE`)."""
    return [CONFIRM_SEED_BASE + i for i in range(count)]


def experiment_name(optimizer: str) -> str:
    """The directory of an optimizer's confirmation, beside its search's `<optimizer>/`."""
    return optimizer + SUFFIX


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


def choose(tune_dir: str | Path, optimizer: str, target: Target) -> list[dict[str, Any]]:
    """The chosen configuration of an optimizer's finished search, from its local Tune experiment
    directory: a list of one (empty when no configuration finished its search)."""
    root = Path(tune_dir)
    trials = analysis.load(root, target=target)
    if STAGE_COLUMN in trials.columns:
        trials = trials[trials[STAGE_COLUMN].fillna(SEARCH) == SEARCH]
    chosen = analysis.chosen_configurations(trials, target=target, top_k=1)
    rows = chosen[chosen["optimizer"] == optimizer]
    return [_entry(root, trials, row) for _, row in rows.iterrows()]


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
_CHOICE_LOCK = threading.Lock()  # the optimizers' runners record their choices in one file


class SearchesDone:
    """When an optimizer's confirmation may start: once no other optimizer's search has a trial waiting
    for a trial slot (or every search has ended). Started as soon as its own search ended, a confirmation
    took the slot another search's trial had been waiting for (Ray does not serve waiting trials in the
    order they asked), so the last search, the study's longest path, ran after the others'
    confirmations (+25% wall on the default study); waiting for every search to end left a slot idle
    while the last one ran. Each search reports whether it has trials waiting (`SearchWaiting`)."""

    def __init__(self, optimizers: list[str]) -> None:
        self._searching = set(optimizers)
        self._waiting = dict.fromkeys(optimizers, True)  # until a search says otherwise
        self._changed = threading.Condition()

    def arrive(self, optimizer: str) -> None:
        """`optimizer`'s search has ended (or it had none to run)."""
        with self._changed:
            self._searching.discard(optimizer)
            self._changed.notify_all()

    def note_waiting(self, optimizer: str, waiting: bool) -> None:
        with self._changed:
            if self._waiting.get(optimizer) != waiting:
                self._waiting[optimizer] = waiting
                self._changed.notify_all()

    def wait(self, optimizer: str) -> bool:
        """True once `optimizer`'s confirmation may start; False if the study is stopping meanwhile."""
        with self._changed:
            while any(self._waiting[o] for o in self._searching - {optimizer}):
                if side_by_side.stopping():
                    return False
                self._changed.wait(timeout=side_by_side.POLL_S)
        return not side_by_side.stopping()


_searches: dict[str, SearchesDone] = {}


def searches_of(args: StudySpec) -> SearchesDone:
    """This run's `SearchesDone` of the study (one per experiment directory)."""
    return _searches.setdefault(args.experiment_dir, SearchesDone(list(args.labels)))


def forget_searches(args: StudySpec) -> None:
    _searches.pop(args.experiment_dir, None)


class SearchWaiting(tune.Callback):
    """In a search's Tune experiment: tells `SearchesDone` whether the search has a trial waiting for a
    slot (Tune creates trials lazily and keeps one waiting while any are left to run). Holds names only:
    Tune pickles its callbacks with the experiment."""

    def __init__(self, experiment_dir: str, optimizer: str) -> None:
        self.experiment_dir, self.optimizer = experiment_dir, optimizer

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        searches = _searches.get(self.experiment_dir)
        if searches is not None:
            searches.note_waiting(self.optimizer, any(t.status == "PENDING" for t in trials))


def run_stages(plan: Plan, contender: Contender, search: Callable[[], Any], *, parallel: int) -> None:
    """An optimizer's part of the study, in its runner's thread (`sweeps.runner.side_by_side`): its search
    (`search`, unless the recorded choice says it has finished), then, with `confirm_seeds`, its choice
    recorded and, once no other search waits for a trial slot (`SearchesDone`), its confirmation.
    `parallel`: the optimizer's share of the trial slots (how many fused groups keep them busy)."""
    args, label = plan.args, contender.label
    searches = searches_of(args)
    try:
        recorded = read_choice(args.experiment_dir) if args.confirm_seeds else None
        if recorded is not None and label in recorded["optimizers"]:
            print(f"{label}'s search has finished (its choice is in {CHOICE_FILE}).", flush=True)
            chosen, seed_list = recorded["optimizers"][label], recorded["seeds"]
        else:
            search()
            if args.confirm_seeds == 0 or side_by_side.stopping():
                return
            chosen, seed_list = _record(args, label, plan.task.target)
    finally:
        searches.arrive(label)
    if not chosen:
        print(f"{label}: no configuration finished its search; nothing to confirm.", flush=True)
        return
    side_by_side.give_way()  # the others' searches may still have to set up and start
    if not searches.wait(label):
        return
    side_by_side.another_fit()
    _run_optimizer(plan, contender, chosen, seed_list, parallel)


def _record(args: StudySpec, label: str, target: Target) -> tuple[list[dict[str, Any]], list[int]]:
    """Choose `label`'s configuration from its search and add it to the choice file."""
    tune_dir = f"{args.experiment_dir}/{label}"
    if args.is_remote_storage:
        local = Path(tempfile.mkdtemp(prefix="optsweep-choice-")) / label
        pyarrow.fs.copy_files(tune_dir, str(local))
        tune_dir = str(local)
    chosen = choose(tune_dir, label, target)
    with _CHOICE_LOCK:
        choice = read_choice(args.experiment_dir) or {
            "seeds": seeds(args.confirm_seeds),
            "target": target.to_json(),
            "optimizers": {},
        }
        choice["optimizers"][label] = chosen
        write_choice(args.experiment_dir, choice)
    return chosen, choice["seeds"]


def _run_optimizer(
    plan: Plan, contender: Contender, chosen: list[dict[str, Any]], seed_list: list[int], parallel: int
) -> tune.ResultGrid:
    args, label = plan.args, contender.label
    name = experiment_name(label)
    path = f"{args.experiment_dir}/{name}"
    # No early stopping here, so no scheduler decisions to wait for (multi-worker trials under ASHA would).
    settings = {**args.settings(), "scheduler_decisions": None}
    if contender.reference != label:
        settings["optimizer_class"] = contender.reference
    resources = trial_resources(TrainConfig(optimizer=label, **settings))
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, task=plan.task, optimizer=contender.cls, run_settings=safeguards.run_settings(args)
        ),
        resources,
    )
    if tune.Tuner.can_restore(path) and safeguards.prepare_restore(args, name, resources):
        print(f"Resuming {label}'s confirmation in {path}: finished trials are kept.", flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        safeguards.restored(tuner, args)
    else:
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
        groups = (
            fusion.pack_members(label, members, settings, plan.task, decision.group_size, parallel)
            if decision is not None and decision.fused
            else []
        )
        layout = f" in {len(groups)} fused group(s)" if groups else ""
        which = ", ".join(str(entry["config_id"]) for entry in chosen)
        print(
            f"Confirming {label}: {which} on {len(seed_list)} fresh seeds ({seed_list[0]}..{seed_list[-1]}) "
            f"x {args.max_epochs} epochs{layout}.",
            flush=True,
        )
        tuner = _new_tuner(plan, label, trainable, settings, members, groups)
        safeguards.created(args, name)
    with interrupts.tune_running():
        return tuner.fit()


def _new_tuner(
    plan: Plan,
    label: str,
    trainable: Any,
    settings: dict[str, Any],
    members: list[dict[str, Any]],
    groups: list[list[dict[str, Any]]],
) -> tune.Tuner:
    args, target = plan.args, plan.task.target
    if groups:
        param_space: dict[str, Any] = {
            "optimizer": label,
            STAGE_KEY: CONFIRM,
            MEMBERS_KEY: tune.grid_search(groups),
            "settings": settings,
        }
    else:
        # One configuration's seeds: its values spelled out, only the seed a grid (Tune leaves nothing to
        # resolve for the trials it creates after a restore).
        param_space = {
            "optimizer": label,
            **{key: value for key, value in members[0].items() if key != "seed"},
            "seed": tune.grid_search([member["seed"] for member in members]),
            "settings": settings,
        }
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=target.key,
            mode=target.mode,
            scheduler=FIFOScheduler(),
            num_samples=1,
            max_concurrent_trials=args.max_concurrent,
            reuse_actors=args.workers_per_trial == 1,
        ),
        run_config=tune.RunConfig(
            name=experiment_name(label),
            storage_path=args.experiment_dir,
            verbose=0,
            log_to_file=True,
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=_callbacks(args, label, len(members), target),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )


def _callbacks(args: StudySpec, label: str, total: int, target: Target) -> list[tune.Callback]:
    callbacks: list[tune.Callback] = [
        ProgressLine(
            f"{label} confirm",
            total,
            max_epochs=args.max_epochs,
            position=(args.labels.index(label) + 1, len(args.labels)),
            target=target,
        )
    ]
    if not args.is_remote_storage:
        callbacks.append(StorageGuard(args.experiment_dir, storage_guard.min_free_bytes()))
    callbacks += tracking.for_study(args).callbacks()
    callbacks += [
        retention.KeepCheckpoints(args.keep_checkpoints),
        feasibility.WaitingForResources(safeguards.demand_text(args), feasibility.wait_note_seconds()),
    ]
    return callbacks


def _absolute(experiment_dir: str) -> str:
    return experiment_dir if "://" in experiment_dir else str(Path(experiment_dir).absolute())
