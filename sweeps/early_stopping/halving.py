"""Early stopping decided per configuration: synchronous successive halving on the mean over seeds.

Ray Tune's ASHA judges every trial alone, as its result arrives. In an optimizer study a trial is one
seed of a configuration, so ASHA ends a configuration's seeds at different rungs by chance (the
reported "mean over seeds" then mixes a seed after 2 epochs with one after 20), and its decisions
depend on which trial reports first (the same command gives different winners). Here:

- the unit is the configuration: at each rung (epochs grace x rf^k, as ASHA's) a configuration goes
  on or stops with all its seeds, judged by the mean over its seeds of the best target value so far
  (the quantity the report ranks configurations by, so the reported best configuration is always one
  that reached the full budget);
- a rung is decided once every configuration still in the running has all its seeds at that rung:
  seeds wait there paused (their resources go to the others) and the decision depends on the results
  only, never on their order. The top max(1, floor(n / rf)) of the n configurations that entered the
  rung go on (ties: the lower configuration number); a configuration with a diverged or failed seed
  scores the target's worst value;
- the records and decisions are written to a state file after every change, so a resumed sweep
  (Tune does not restore its schedulers' state) makes exactly the decisions an uninterrupted one makes.

Trials are grouped by their config's `optimizer` and `__configuration`; their seed is `seed`. One
scheduler serves a whole study (one Tune experiment for all its optimizers): every optimizer has its own
rungs and decisions, judged on its own trials only, its own cap on running trials, and the optimizers
share the slots evenly.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Repeater, Searcher

from optsweep import atomic_files
from optsweep.sweeps import _ray_compat
from optsweep.sweeps.early_stopping.per_optimizer import optimizer_label
from optsweep.vocabulary import CONFIGURATION_KEY, DIVERGED_FLAG, EPOCH, MEMBERS_KEY, Target, member_results

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

STATE_FILE = "optsweep_halving.json"
"""The rung records and decisions (of every optimizer); the study keeps it beside its Tune experiment."""

Group = tuple[str, int]  # (optimizer, configuration)
Unit = tuple[str, int, int]  # (optimizer, configuration, seed): one run, alone or a fused group's member


def rungs_for(max_epochs: int, reduction_factor: int = 3) -> list[int]:
    """The epochs at which configurations are judged: grace x rf^k below `max_epochs`, with the first rung
    after 1/8 of the epochs (early enough to save time, late enough for a warmup or a slow starter)."""
    grace = max(1, max_epochs // 8)
    rungs = []
    epoch = grace
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= reduction_factor
    return rungs


class ConfigurationHalving(TrialScheduler):
    """See the module docstring. One instance serves every optimizer of a study (one Tune experiment whose
    trials carry `config["optimizer"]`): rungs are decided per optimizer, each on its own trials only.
    `configurations` and `seeds` are those of every optimizer; `state_file` (None: kept in memory only)
    persists the records and decisions across a resume; `max_running` caps the running trials of each
    optimizer (--max-concurrent)."""

    def __init__(
        self,
        target: Target,
        max_epochs: int,
        configurations: int,
        seeds: int,
        *,
        reduction_factor: int = 3,
        state_file: str | None = None,
        max_running: int | None = None,
    ) -> None:
        super().__init__()
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor {reduction_factor} is invalid: it must be >= 2")
        self.target = target
        self.max_epochs = max_epochs
        self.configurations = configurations
        self.seeds = seeds
        self.reduction_factor = reduction_factor
        self.rungs = rungs_for(max_epochs, reduction_factor)
        self.state_file = state_file  # a local path or a storage URI (s3://...)
        # At most this many trials of each optimizer running at once (--max-concurrent). Tune's own
        # max_concurrent_trials counts the trials paused at a rung, which wait for the others: a cap below
        # the number of trials would stop every trial from ever reaching the rung (a silent hang); and it
        # is one cap for the whole experiment, which one optimizer's trials could fill.
        self.max_running = max_running
        # rung -> group -> seed -> best target value so far at that rung
        self.records: dict[int, dict[Group, dict[int, float]]] = {}
        self.failed: set[Group] = set()  # a seed diverged or errored
        self.survivors: dict[tuple[str, int], list[int]] = {}  # (optimizer, rung) -> configurations going on
        self.entered: dict[tuple[str, int], list[int]] = {}  # (optimizer, rung) -> configurations judged
        self._to_unpause: set[str] = set()
        # Under the cap: trials held paused before they ever ran. Trials chosen (let go) that have not
        # started yet: they count as running, against their optimizer's cap and in the fair choice.
        self._held: set[str] = set()
        self._released: set[str] = set()
        # Loaded at first use: Tuner.restore unpickles the scheduler from tuner.pkl, as it was built.
        self._loaded = False

    # ------------------------------------------------------------------------------ Tune's calls

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the target is given; Tune's metric/mode are the same target's

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self._ensure_loaded()

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> str:
        self._ensure_loaded()
        optimizer = optimizer_label(trial)
        self._to_unpause.discard(trial.trial_id)  # it runs again
        epoch = int(result.get(EPOCH, 0))
        if self._has_trained_its_share(trial, epoch):
            return self.STOP
        # Rungs below this epoch that are not decided yet: only for a seed resumed from its checkpoint
        # after a restart. It waits, as an uninterrupted run would have; without a record of such a rung
        # (its state file was lost) it counts with its best so far, so that the rung can still be decided.
        undecided = [r for r in self.rungs if r < epoch and (optimizer, r) not in self.survivors]
        diverged = False
        for (_, configuration, seed), reported in self._reports(trial, result):
            for rung in undecided:
                self._seeds(rung, optimizer, configuration).setdefault(seed, self._value(reported))
            if epoch in self.rungs and (optimizer, epoch) not in self.survivors:
                self._seeds(epoch, optimizer, configuration)[seed] = self._value(reported)
            if reported.get(DIVERGED_FLAG):
                self.failed.add((optimizer, configuration))
                diverged = True
        if epoch not in self.rungs and not undecided and not diverged:
            return self.CONTINUE
        self._after_change(tune_controller, optimizer)
        if self._has_trained_its_share(trial, epoch):
            return self.STOP
        decided = all((optimizer, r) in self.survivors for r in self.rungs if r <= epoch)
        return self.CONTINUE if decided else self.PAUSE

    def _reports(self, trial: Trial, result: dict[str, Any]) -> list[tuple[Unit, dict[str, Any]]]:
        """(unit, its result) for each unit the result reports: the trial itself, or a fused group's
        members that trained this epoch."""
        units = self._units(trial)
        if MEMBERS_KEY not in trial.config:
            return [(units[0], result)]
        members = member_results(result)
        return [(units[k], reported) for k, reported in sorted(members.items()) if 0 <= k < len(units)]

    def _seeds(self, rung: int, optimizer: str, configuration: int) -> dict[int, float]:
        """seed -> value recorded at `rung` for a configuration (created empty)."""
        return self.records.setdefault(rung, {}).setdefault((optimizer, configuration), {})

    def _value(self, result: dict[str, Any]) -> float:
        return self.target.worst if result.get(DIVERGED_FLAG) else float(result[self.target.best_key])

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        optimizer = optimizer_label(trial)
        for (_, configuration, _), reported in self._reports(trial, result or {}):
            if reported.get(DIVERGED_FLAG):
                self.failed.add((optimizer, configuration))
        if (result or {}).get(EPOCH, 0) < self.max_epochs:
            # Ended before the full budget without being stopped here: its configurations count as failed.
            for _, configuration, _ in self._units(trial):
                if not self._eliminated(optimizer, configuration):
                    self.failed.add((optimizer, configuration))
        self._after_change(tune_controller, optimizer)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        # Tune also calls this when it requeues a failed trial to retry it from its checkpoint (within
        # its max_failures): that trial still reports, and its configurations have not failed.
        if trial.should_recover():
            return
        optimizer = optimizer_label(trial)
        for _, configuration, _ in self._units(trial):
            self.failed.add((optimizer, configuration))
        self._after_change(tune_controller, optimizer)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self._to_unpause.discard(trial.trial_id)
        self._held.discard(trial.trial_id)
        self._released.discard(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        """The optimizer with the fewest running trials first (ties: the one that appears first among the
        trials), so that optimizers share the slots evenly while each has trials to run; and of its trials,
        paused seeds whose configuration goes on first, then new trials, then trials paused before a
        restore whose rungs are decided, each in the experiment's order.

        Tune starts every pending trial it has resources for, whether chosen here or not (the choice only
        comes first). So a pending trial that must not start is made paused: a seed restored while it
        waited at a rung, and, under the cap on running trials, every new trial beyond it."""
        self._ensure_loaded()
        trials = tune_controller.get_trials()
        # Tune carries out a PAUSE later than the result that asked for it: a seed may have finished
        # pausing only after its configuration was eliminated. Stopping it again is a no-op.
        for trial in trials:
            if trial.status in (Trial.PAUSED, Trial.PENDING) and self._has_trained_its_share(trial):
                _stop(tune_controller, trial)
            elif trial.status == Trial.PENDING and self._waiting(trial):
                # Restored as pending, it would otherwise train on past its rung: it waits paused, as it
                # did before the restore.
                _ray_compat.hold_pending_trial(tune_controller, trial)
        pending = {trial.trial_id for trial in trials if trial.status == Trial.PENDING}
        self._released &= pending  # let go, and not started yet
        if self.max_running is not None:
            for trial in trials:
                if trial.status == Trial.PENDING and trial.trial_id not in self._released:
                    _ray_compat.hold_pending_trial(tune_controller, trial)
                    self._held.add(trial.trial_id)
        chosen = self._next_to_run(trials)
        if chosen is not None:
            self._held.discard(chosen.trial_id)
            self._released.add(chosen.trial_id)
        return chosen

    def _running_by_optimizer(self, trials: list[Trial]) -> dict[str, int]:
        """optimizer -> its running trials and those let go that have not started yet (what the cap counts;
        trials paused at a rung do not count), for every optimizer among `trials` (in their order)."""
        running: dict[str, int] = {}
        for trial in trials:
            optimizer = optimizer_label(trial)
            started = trial.status == Trial.RUNNING
            let_go = trial.status == Trial.PENDING and trial.trial_id in self._released
            running[optimizer] = running.get(optimizer, 0) + int(started or let_go)
        return running

    def _next_to_run(self, trials: list[Trial]) -> Trial | None:
        """The optimizer with the fewest running trials that has one to run (under the cap, one with room),
        and its trial by the priority of `_candidate` (then the experiment's order)."""
        running = self._running_by_optimizer(trials)
        appearance = {optimizer: k for k, optimizer in enumerate(running)}
        best: tuple[int, int, int, int] | None = None  # (running, appearance, category, index)
        for index, trial in enumerate(trials):
            optimizer = optimizer_label(trial)
            if self.max_running is not None and running[optimizer] >= self.max_running:
                continue
            if best is not None and (running[optimizer], appearance[optimizer]) > best[:2]:
                continue
            category = self._candidate(trial)
            if category is None:
                continue
            key = (running[optimizer], appearance[optimizer], category, index)
            if best is None or key < best:
                best = key
        return None if best is None else trials[best[3]]

    def _candidate(self, trial: Trial) -> int | None:
        """Whether the trial may be chosen, and how urgently (lower first): 0, a paused seed whose
        configuration goes on; 1, a new trial, or one held under the cap before it ever ran; 2, one paused
        before a restore whose rungs are decided now."""
        if trial.status == Trial.PAUSED and trial.trial_id in self._to_unpause:
            return 0
        if trial.status == Trial.PENDING and trial.trial_id not in self._released:
            return 1
        if trial.status == Trial.PAUSED and trial.trial_id in self._held:
            return 1
        if trial.status == Trial.PAUSED and self._waiting_is_over(trial):
            return 2
        return None

    def debug_string(self) -> str:
        return f"Per-configuration halving at epochs {self.rungs}, keeping 1/{self.reduction_factor}"

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("max_running", None)  # pickled (tuner.pkl) before the cap existed
        state.setdefault("_held", set())
        state.setdefault("_released", set())
        self.__dict__.update(state)

    # -------------------------------------------------------------------------------- decisions

    def decisions(self) -> dict[tuple[str, int], list[int]]:
        """(optimizer, rung) -> the configurations that went on from that rung."""
        return dict(self.survivors)

    def _decide_ready(self, tune_controller: TuneController, optimizer: str) -> None:
        """Decide every rung of `optimizer` whose configurations have all reported (in rung order)."""
        entering = list(range(self.configurations))
        for rung in self.rungs:
            key = (optimizer, rung)
            if key not in self.survivors:
                if not self._complete(optimizer, rung, entering, self._ended(tune_controller, optimizer)):
                    return
                self._decide(tune_controller, optimizer, rung, entering)
            entering = self.survivors[key]

    def _complete(self, optimizer: str, rung: int, entering: list[int], ended: set[int]) -> bool:
        """Every configuration judged at `rung` has all its seeds there, or failed, or can no longer
        report (all its trials ended without a record: only after a state file was lost)."""
        records = self.records.get(rung, {})
        return all(
            (optimizer, c) in self.failed or len(records.get((optimizer, c), {})) >= self.seeds or c in ended
            for c in entering
        )

    def _ended(self, tune_controller: TuneController, optimizer: str) -> set[int]:
        """Configurations of `optimizer` all of whose trials have ended (terminated or errored)."""
        statuses: dict[int, set[str]] = defaultdict(set)
        for trial in tune_controller.get_trials():
            for trial_optimizer, configuration, _ in self._units(trial):
                if trial_optimizer == optimizer:
                    statuses[configuration].add(trial.status)
        return {c for c, seen in statuses.items() if seen <= {Trial.TERMINATED, Trial.ERROR}}

    def _decide(
        self, tune_controller: TuneController, optimizer: str, rung: int, entering: list[int]
    ) -> None:
        def score(configuration: int) -> float:
            values = self._seeds(rung, optimizer, configuration).values()
            if (optimizer, configuration) in self.failed or len(values) < self.seeds:
                return -math.inf
            return self.target.sign() * sum(values) / len(values)

        keep = max(1, len(entering) // self.reduction_factor)
        ranked = sorted(entering, key=lambda c: (-score(c), c))
        self.entered[(optimizer, rung)] = list(entering)
        self.survivors[(optimizer, rung)] = sorted(c for c in ranked[:keep] if score(c) > -math.inf)
        self._apply(tune_controller, optimizer)

    def _apply(self, tune_controller: TuneController, optimizer: str) -> None:
        """Stop the paused seeds of eliminated configurations; mark the others' to be resumed."""
        for trial in tune_controller.get_trials():
            if trial.status not in (Trial.PAUSED, Trial.PENDING) and not trial.is_saving:
                continue
            if optimizer_label(trial) != optimizer:
                continue
            if self._has_trained_its_share(trial):
                _stop(tune_controller, trial)
            elif trial.status == Trial.PAUSED and self._waiting_is_over(trial):
                self._to_unpause.add(trial.trial_id)

    def _after_change(self, tune_controller: TuneController, optimizer: str) -> None:
        self._decide_ready(tune_controller, optimizer)
        self._save()

    def _eliminated(self, optimizer: str, configuration: int) -> bool:
        for rung in self.rungs:
            survivors = self.survivors.get((optimizer, rung))
            if survivors is None:
                return False
            if configuration not in survivors:
                return True
        return False

    def _trial_eliminated(self, trial: Trial) -> bool:
        """Whether every configuration the trial trains (one, or a fused group's) is eliminated."""
        return all(self._eliminated(o, c) for o, c, _ in self._units(trial))

    def _elimination_rung(self, optimizer: str, configuration: int) -> int:
        """The rung at which an eliminated configuration stopped."""
        return next(r for r in self.rungs if configuration not in self.survivors.get((optimizer, r), []))

    def _has_trained_its_share(self, trial: Trial, epoch: int | None = None) -> bool:
        """Whether every configuration the trial trains is eliminated and the trial has trained (`epoch`;
        by default its last result that Tune knows of) up to the rung where the last of them stopped.

        A trial whose configurations were eliminated but that has not got that far is one whose earlier
        run a killed driver lost after the decision (Tune restores trials from its last snapshot, or
        creates them again when the snapshot predates them): it trains up to that rung again, as the
        uninterrupted sweep did, so that its results are on record, and stops there."""
        if not self._trial_eliminated(trial):
            return False
        if epoch is None:
            epoch = int(trial.last_result.get(EPOCH, 0))
        return epoch >= max(self._elimination_rung(o, c) for o, c, _ in self._units(trial))

    def _rungs_reached(self, trial: Trial) -> list[int]:
        return [
            r
            for r in self.rungs
            if any(s in self.records.get(r, {}).get((o, c), {}) for o, c, s in self._units(trial))
        ]

    def _waiting(self, trial: Trial) -> bool:
        """Whether the trial reached a rung that is not decided yet (so it must not run on)."""
        optimizer = optimizer_label(trial)
        return any((optimizer, r) not in self.survivors for r in self._rungs_reached(trial))

    def _waiting_is_over(self, trial: Trial) -> bool:
        """Whether a paused trial may run on: every rung it reached is decided, and a configuration of it
        goes on, or it has still to train up to the rung where its configurations stopped (results of an
        earlier run that a killed driver lost)."""
        optimizer = optimizer_label(trial)
        reached = self._rungs_reached(trial)
        decided = all((optimizer, r) in self.survivors for r in reached)
        return bool(reached) and decided and not self._has_trained_its_share(trial)

    @staticmethod
    def _units(trial: Trial) -> list[Unit]:
        """(optimizer, configuration, seed) of each run the trial trains (itself, or a group's members)."""
        config = trial.config
        optimizer = optimizer_label(trial)
        if MEMBERS_KEY in config:
            return [
                (optimizer, int(m.get(CONFIGURATION_KEY, -1)), int(m.get("seed", 0)))
                for m in config[MEMBERS_KEY]
            ]
        # Random search sets the seed; Optuna's Repeater numbers the seeds of a configuration instead.
        seed = config.get("seed", config.get("__trial_index__", 0))
        return [(optimizer, int(config.get(CONFIGURATION_KEY, -1)), int(seed))]

    # ------------------------------------------------------------------------------ persistence

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Tune's tuner.pkl) without its records: an unpickled scheduler reads its state file."""
        state = dict(self.__dict__)
        state.update(records={}, failed=set(), survivors={}, entered={}, _loaded=False)
        state.update(_to_unpause=set(), _held=set(), _released=set())
        return state

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.state_file is not None:
            text = atomic_files.read_text_at(self.state_file)
            if text is not None:
                self._load(text)

    def _save(self) -> None:
        if self.state_file is None:
            return
        state = {
            "target": self.target.to_json(),
            "rungs": self.rungs,
            "configurations": self.configurations,
            "seeds": self.seeds,
            "records": [
                [rung, optimizer, configuration, seed, value]
                for rung, groups in sorted(self.records.items())
                for (optimizer, configuration), seeds in sorted(groups.items())
                for seed, value in sorted(seeds.items())
            ],
            "failed": sorted([o, c] for o, c in self.failed),
            "decisions": [
                [o, rung, self.entered[(o, rung)], survivors]
                for (o, rung), survivors in sorted(self.survivors.items())
            ],
        }
        atomic_files.write_text_at(self.state_file, json.dumps(state))

    def _load(self, text: str) -> None:
        try:
            state = json.loads(text)
            planned = (state["rungs"], state["configurations"], state["seeds"])
            if planned != (self.rungs, self.configurations, self.seeds):
                raise ValueError(f"it was written for rungs, configurations and seeds {planned}")
            for rung, optimizer, configuration, seed, value in state["records"]:
                self._seeds(rung, optimizer, configuration)[seed] = value
            self.failed = {(o, c) for o, c in state["failed"]}
            for optimizer, rung, entered, survivors in state["decisions"]:
                self.entered[(optimizer, rung)] = list(entered)
                self.survivors[(optimizer, rung)] = list(survivors)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"the early-stopping state {self.state_file} is damaged or belongs to another study "
                f"({error}); move it aside to decide the rungs again from the trials' reports"
            ) from None


class StateFileDecisions:
    """A scheduler's decisions as a fused trial learns them (`trainables.fused_trial.MemberDecisions`):
    read from its state file, which it writes before it lets a trial past a decided rung."""

    def __init__(self, state_file: str) -> None:
        self.state_file = state_file

    def eliminated(self, optimizer: str, epoch: int) -> set[int]:
        text = atomic_files.read_text_at(self.state_file)
        if text is None:
            return set()
        eliminated: set[int] = set()
        for decided_optimizer, rung, entered, survivors in json.loads(text)["decisions"]:
            if decided_optimizer == optimizer and rung <= epoch:
                eliminated |= set(entered) - set(survivors)
        return eliminated


class SeedRepeater(Repeater):
    """Ray's Repeater (one searcher configuration, `repeat` seeds, the searcher told their mean) for seeds
    that early stopping ends while they wait at a rung: Tune then reports their completion without a
    result, which Repeater would score NaN, leaving the searcher blind to every stopped configuration.
    Such a seed is scored with its last result (the rung where its configuration stopped)."""

    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True) -> None:
        super().__init__(searcher, repeat=repeat, set_index=set_index)
        self._last_results: dict[str, dict[str, Any]] = {}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._last_results[trial_id] = result
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, **kwargs: Any) -> None:
        last = self._last_results.pop(trial_id, None)
        if not result and not kwargs.get("error"):
            result = last
        super().on_trial_complete(trial_id, result, **kwargs)


def _stop(tune_controller: TuneController, trial: Trial) -> None:
    """Stop a paused (or waiting) trial. Ray 2.60 re-serialises only the trials it marks, and it marks a
    stopped trial only when it has a live actor: a paused one would stay PAUSED in the experiment
    state (and read as unfinished by the report) unless marked here."""
    tune_controller.stop_trial(trial)
    _ray_compat.mark_stopped_trial_for_snapshot(tune_controller, trial)
