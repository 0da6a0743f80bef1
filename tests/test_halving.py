"""Per-configuration successive halving (issue 12), driven the way Tune's controller drives a scheduler,
without Ray: trials start when the scheduler chooses them, report one epoch at a time in an order we
choose, pause, resume from their last reported epoch, and stop when told."""

from __future__ import annotations

import itertools
import json
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ray.tune.experiment import Trial
from ray.tune.search import Searcher

from optsweep.sweeps.early_stopping.halving import ConfigurationHalving, SeedRepeater, rungs_for
from optsweep.vocabulary import Target

TARGET = Target("acc", "max")


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = Trial.PENDING
    is_saving: bool = False
    epoch: int = 0  # last reported epoch (its checkpoint)
    best: float = -1.0
    last_result: dict[str, Any] = field(default_factory=dict)

    def set_status(self, status: str) -> None:
        self.status = status


@dataclass
class FakeController:
    trials: list[FakeTrial]
    scheduler: ConfigurationHalving | None = None
    log: list[tuple[str, int]] = field(default_factory=list)

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def stop_trial(self, trial: FakeTrial) -> None:
        assert trial.status in (Trial.PAUSED, Trial.PENDING)
        trial.status = Trial.TERMINATED
        assert self.scheduler is not None
        self.scheduler.on_trial_remove(self, trial)  # as Tune does for a paused trial


def accuracy(
    configuration: int, seed: int, epoch: int, diverge: set[tuple[int, int]], optimizer: str = "adam"
) -> float | None:
    """A deterministic learning curve; None: this seed diverges at this epoch. Each optimizer ranks the
    configurations differently and learns at its own pace (sgd higher overall: mixed, it would win)."""
    if (configuration, seed) in diverge and epoch == 3:
        return None
    shift, pace, floor = (0, 0.5, 0.0) if optimizer == "adam" else (sum(map(ord, optimizer)), 0.8, 0.5)
    # Configurations of different quality, not in index order.
    quality = ((configuration * 7919 + shift) % 13) / 13
    return floor + quality * (1 - pace**epoch) + 0.01 * seed


def could_run(trial: FakeTrial, rungs: list[int], decided: dict[tuple[str, int], list[int]]) -> bool:
    """Pending, or paused where every rung it reached is decided and its configuration goes on."""
    optimizer, configuration = trial.config["optimizer"], trial.config["__configuration"]
    reached = [r for r in rungs if r <= trial.epoch]
    goes_on = all(configuration in decided.get((optimizer, r), []) for r in reached)
    return trial.status == Trial.PENDING or (trial.status == Trial.PAUSED and goes_on)


def simulate(
    configurations: int,
    seeds: int,
    max_epochs: int,
    *,
    order_seed: int,
    slots: int,
    state_file: Path | None = None,
    restart_after: int | None = None,
    lost_steps: int = 0,
    diverge: frozenset[tuple[int, int]] = frozenset(),
    optimizers: tuple[str, ...] = ("adam",),
    max_running: int | None = None,
    observe: list[dict[str, tuple[int, bool]]] | None = None,
) -> tuple[dict, dict[str, int], dict[str, str]]:
    """Run a whole sweep; returns (decisions, last epoch per trial, final status per trial).

    `restart_after`: the driver is killed after that many results, and the last `lost_steps` of them
    are lost to Tune (its experiment snapshot is older), though the scheduler's state file has them.
    `optimizers`: one experiment whose trials are created round-robin over them (trial ids get the
    optimizer's name when there are several). `max_running`: the scheduler's cap, checked per optimizer
    at every step. `observe`: gets, at every step, optimizer -> (its running trials, whether it has a trial
    that could run: pending, or paused with every rung it reached decided)."""
    trials = [
        FakeTrial(
            f"t{c:02d}_{s}" + (f"_{o}" if len(optimizers) > 1 else ""),
            {"optimizer": o, "__configuration": c, "seed": s},
        )
        for c, s in itertools.product(range(configurations), range(seeds))
        for o in optimizers
    ]
    controller = FakeController(trials)

    def new_scheduler() -> ConfigurationHalving:
        scheduler = ConfigurationHalving(
            TARGET,
            max_epochs,
            configurations,
            seeds,
            state_file=str(state_file) if state_file else None,
            max_running=max_running,
        )
        controller.scheduler = scheduler
        for trial in trials:
            scheduler.on_trial_add(controller, trial)
        return scheduler

    scheduler = new_scheduler()
    as_built = pickle.dumps(scheduler)  # what Tune keeps in tuner.pkl and unpickles on Tuner.restore
    rng = random.Random(order_seed)
    steps = 0
    pausing: list[FakeTrial] = []  # Tune carries out a PAUSE later (after saving the trial)
    snapshot: dict[str, tuple[str, int, float, dict[str, Any]]] = {}
    while True:
        for trial in [
            t
            for t in pausing
            if rng.random() < 0.5 or not any(t.status == Trial.RUNNING and t not in pausing for t in trials)
        ]:
            pausing.remove(trial)
            if trial.status == Trial.RUNNING:
                trial.status = Trial.PAUSED
        running = [t for t in trials if t.status == Trial.RUNNING]
        while len(running) < slots:
            chosen = scheduler.choose_trial_to_run(controller)
            if chosen is None:
                break
            chosen.status = Trial.RUNNING
            running.append(chosen)
        # Then Tune starts every pending trial it has resources for, whether the scheduler chose it or not.
        for trial in [t for t in trials if t.status == Trial.PENDING][: slots - len(running)]:
            trial.status = Trial.RUNNING
            running.append(trial)
        by_optimizer = {o: sum(t.config["optimizer"] == o for t in running) for o in optimizers}
        assert max_running is None or max(by_optimizer.values()) <= max_running, by_optimizer
        if observe is not None:
            decided = scheduler.decisions()

            observe.append(
                {
                    o: (
                        n,
                        any(
                            could_run(t, scheduler.rungs, decided)
                            for t in trials
                            if t.config["optimizer"] == o
                        ),
                    )
                    for o, n in by_optimizer.items()
                }
            )
        if not running and not pausing:
            break
        reporting = [t for t in running if t not in pausing]
        if not reporting:
            continue
        trial = rng.choice(reporting)  # which running trial reports next: timing, here random
        trial.epoch += 1
        config = trial.config
        value = accuracy(
            config["__configuration"], config["seed"], trial.epoch, set(diverge), config["optimizer"]
        )
        result: dict[str, Any] = {"epoch": trial.epoch, "diverged": value is None}
        if value is not None:
            trial.best = max(trial.best, value)
        result[TARGET.key] = TARGET.worst if value is None else value
        result[TARGET.best_key] = trial.best if trial.best >= 0 else TARGET.worst
        trial.last_result = result
        if value is None:  # the loop ends a diverged run itself
            trial.status = Trial.TERMINATED
            scheduler.on_trial_complete(controller, trial, result)
            continue
        decision = scheduler.on_trial_result(controller, trial, result)
        if decision == scheduler.PAUSE:
            pausing.append(trial)
        elif decision == scheduler.STOP or trial.epoch == max_epochs:
            trial.status = Trial.TERMINATED
            scheduler.on_trial_complete(controller, trial, result)
        steps += 1
        if restart_after is not None and steps == restart_after - lost_steps:
            snapshot = {t.trial_id: (t.status, t.epoch, t.best, dict(t.last_result)) for t in trials}
        if restart_after is not None and steps == restart_after:
            # The driver dies: Tune restores its last snapshot, unfinished trials as PENDING from their
            # checkpoints, and the scheduler starts anew (Tune keeps no scheduler state), reading its
            # state file.
            pausing.clear()
            for t in trials:
                t.status, t.epoch, t.best, t.last_result = snapshot[t.trial_id]
                if t.status in (Trial.RUNNING, Trial.PAUSED):
                    t.status = Trial.PENDING
            scheduler = pickle.loads(as_built)
            controller.scheduler = scheduler
            for t in trials:
                scheduler.on_trial_add(controller, t)
        assert steps < 100_000, "the simulated sweep does not end"
    epochs = {t.trial_id: t.epoch for t in trials}
    return scheduler.decisions(), epochs, {t.trial_id: t.status for t in trials}


def test_rungs_follow_ashas_schedule() -> None:
    assert rungs_for(20) == [2, 6, 18]
    assert rungs_for(2) == [1]
    assert rungs_for(1) == []
    assert rungs_for(100, 4) == [12, 48]


def test_decisions_are_per_configuration_and_independent_of_timing() -> None:
    runs = [
        simulate(12, 3, 20, order_seed=seed, slots=slots) for seed, slots in [(0, 1), (1, 2), (2, 5), (3, 36)]
    ]
    decisions, epochs, _ = runs[0]
    assert all(run[:2] == (decisions, epochs) for run in runs[1:])
    assert all(set(run[2].values()) == {Trial.TERMINATED} for run in runs)  # none left paused
    assert [len(decisions[("adam", r)]) for r in (2, 6, 18)] == [4, 1, 1]
    by_configuration: dict[int, set[int]] = {}
    for trial_id, epoch in epochs.items():
        by_configuration.setdefault(int(trial_id[1:3]), set()).add(epoch)
    assert all(len(seen) == 1 for seen in by_configuration.values())  # all seeds stop together
    (best,) = decisions[("adam", 18)]
    assert by_configuration[best] == {20}  # the survivor's seeds all trained the full budget
    # The survivors are the best by the mean over seeds at each rung.
    means = {c: sum(accuracy(c, s, 2, set()) for s in range(3)) / 3 for c in range(12)}
    assert decisions[("adam", 2)] == sorted(sorted(means, key=lambda c: (-means[c], c))[:4])


def test_a_resumed_sweep_decides_exactly_as_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = simulate(9, 2, 20, order_seed=5, slots=2, state_file=tmp_path / "a.json")
    for restart_after in (5, 40, 77):
        state = tmp_path / f"b{restart_after}.json"
        resumed = simulate(9, 2, 20, order_seed=6, slots=2, state_file=state, restart_after=restart_after)
        assert resumed[:2] == whole[:2], restart_after


@pytest.mark.parametrize("restart_after", [20, 23, 40, 60, 77])
@pytest.mark.parametrize("lost_steps", [1, 4, 12])
def test_trials_the_killed_driver_lost_after_a_decision_train_again_up_to_their_rung(
    tmp_path: Path, restart_after: int, lost_steps: int
) -> None:
    """Tune's snapshot lags the scheduler's state file: trials whose results were decided on but lost
    (created again from scratch, or restored from an older checkpoint) train up to the rung where their
    configuration stopped, so that every trial ends at the epoch an uninterrupted sweep ends it."""
    whole = simulate(9, 2, 20, order_seed=5, slots=4, state_file=tmp_path / "whole.json")
    state = tmp_path / "resumed.json"
    resumed = simulate(
        9, 2, 20, order_seed=6, slots=4, state_file=state, restart_after=restart_after, lost_steps=lost_steps
    )
    assert resumed[0] == whole[0]
    assert resumed[1] == whole[1]
    assert set(resumed[2].values()) == {Trial.TERMINATED}
    # Without its state file a resumed sweep still ends (rungs decided on what the seeds report then).
    _, _, statuses = simulate(9, 2, 20, order_seed=6, slots=2, state_file=None, restart_after=40)
    assert set(statuses.values()) == {Trial.TERMINATED}


TWO = ("adam", "sgd")


def alone_and_together(
    run: tuple[dict, dict[str, int], dict[str, str]], optimizer: str
) -> tuple[dict, dict[str, int]]:
    """One optimizer's decisions and epochs out of a two-optimizer run, named as in a run of it alone."""
    decisions, epochs, _ = run
    suffix = f"_{optimizer}"
    return (
        {key: kept for key, kept in decisions.items() if key[0] == optimizer},
        {t.removesuffix(suffix): e for t, e in epochs.items() if t.endswith(suffix)},
    )


@pytest.mark.parametrize(
    ("order_seed", "slots", "max_running"), [(0, 1, None), (1, 2, None), (2, 5, 2), (3, 8, 1)]
)
def test_two_optimizers_in_one_experiment_decide_as_each_alone(
    order_seed: int, slots: int, max_running: int | None
) -> None:
    """One scheduler, one trial list with adam's and sgd's trials interleaved: each optimizer's rungs are
    decided on its own trials (sgd's curves are higher: mixed in, they would eliminate all of adam's)."""
    together = simulate(9, 2, 20, order_seed=order_seed, slots=slots, optimizers=TWO, max_running=max_running)
    assert set(together[2].values()) == {Trial.TERMINATED}
    for optimizer in TWO:
        decisions, epochs, _ = simulate(9, 2, 20, order_seed=7, slots=2, optimizers=(optimizer,))
        assert alone_and_together(together, optimizer) == (decisions, epochs)
    # The two optimizers differ (else the comparison above could not tell them apart).
    assert alone_and_together(together, "adam")[1] != alone_and_together(together, "sgd")[1]
    assert together[0][("adam", 2)] != together[0][("sgd", 2)]


def test_the_cap_on_running_trials_is_per_optimizer() -> None:
    """--max-concurrent N: at most N trials of each optimizer run at once (simulate checks it at every
    step), and the optimizers run side by side: one global cap would let only N run in all."""
    seen: list[dict[str, tuple[int, bool]]] = []
    together = simulate(6, 2, 20, order_seed=4, slots=4, optimizers=TWO, max_running=1, observe=seen)
    assert all(n <= 1 for step in seen for n, _ in step.values())
    both = [step for step in seen if all(work for _, work in step.values())]
    assert both and all(step["adam"][0] == step["sgd"][0] == 1 for step in both)
    for optimizer in TWO:
        decisions, epochs, _ = simulate(6, 2, 20, order_seed=0, slots=1, optimizers=(optimizer,))
        assert alone_and_together(together, optimizer) == (decisions, epochs)


@pytest.mark.parametrize("order_seed", range(4))
def test_optimizers_share_the_slots_while_both_have_trials_to_run(order_seed: int) -> None:
    """Two slots, two optimizers, no cap: while both have a trial that could run, each runs one. (Paused
    seeds going on came first whatever their optimizer: one optimizer's rung decision took both slots.)"""
    seen: list[dict[str, tuple[int, bool]]] = []
    simulate(9, 3, 20, order_seed=order_seed, slots=2, optimizers=TWO, observe=seen)
    both = [step for step in seen if all(work for _, work in step.values())]
    assert len(both) > 20
    assert [step for step in both if step["adam"][0] != 1 or step["sgd"][0] != 1] == []


@pytest.mark.parametrize("restart_after", [7, 40, 90, 150])
def test_a_resumed_two_optimizer_experiment_decides_as_an_uninterrupted_one(
    tmp_path: Path, restart_after: int
) -> None:
    """One state file holds both optimizers' records and decisions; after a restart each optimizer's
    trials end where the uninterrupted experiment ends them."""
    whole = simulate(9, 2, 20, order_seed=5, slots=3, optimizers=TWO, state_file=tmp_path / "whole.json")
    resumed = simulate(
        9,
        2,
        20,
        order_seed=6,
        slots=3,
        optimizers=TWO,
        state_file=tmp_path / "resumed.json",
        restart_after=restart_after,
        lost_steps=3,
        max_running=2,
    )
    assert resumed[:2] == whole[:2]
    assert set(resumed[2].values()) == {Trial.TERMINATED}
    recorded = json.loads((tmp_path / "resumed.json").read_text())
    assert {optimizer for optimizer, *_ in recorded["decisions"]} == set(TWO)


def test_a_configuration_with_a_diverged_seed_stops_at_the_next_rung() -> None:
    decisions, epochs, _ = simulate(6, 2, 20, order_seed=0, slots=3, diverge=frozenset({(5, 1)}))
    assert 5 not in decisions[("adam", 6)]
    assert epochs["t05_1"] == 3  # it ended itself
    assert epochs["t05_0"] <= 6  # its other seed stopped by the next rung (sooner once the rung is decided)
    healthy = simulate(6, 2, 20, order_seed=0, slots=3)
    assert healthy[0][("adam", 2)] == decisions[("adam", 2)] or 5 in healthy[0][("adam", 2)]


def test_a_damaged_state_file_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(ValueError, match="early-stopping state .* is damaged or belongs to another study"):
        ConfigurationHalving(TARGET, 20, 4, 2, state_file=str(state)).choose_trial_to_run(FakeController([]))
    simulate(4, 2, 20, order_seed=0, slots=2, state_file=tmp_path / "ok.json")
    recorded = json.loads((tmp_path / "ok.json").read_text())
    with pytest.raises(ValueError, match="written for rungs, configurations and seeds"):
        ConfigurationHalving(TARGET, 20, 4, 3, state_file=str(tmp_path / "ok.json")).on_trial_add(
            FakeController([]), FakeTrial("t", {"optimizer": "adam", "__configuration": 0, "seed": 0})
        )
    assert recorded["rungs"] == [2, 6, 18]


def test_min_targets_keep_the_lowest() -> None:
    target = Target("loss", "min")
    scheduler = ConfigurationHalving(target, 4, 3, 1)
    trials = [FakeTrial(f"t{c}", {"optimizer": "sgd", "__configuration": c, "seed": 0}) for c in range(3)]
    controller = FakeController(trials, scheduler)
    decisions = [
        scheduler.on_trial_result(controller, t, {"epoch": 1, target.best_key: loss})
        for t, loss in zip(trials, (0.5, 0.2, 0.9), strict=True)
    ]
    assert decisions[:2] == [scheduler.PAUSE, scheduler.PAUSE]
    assert decisions[2] == scheduler.STOP  # the third completed the rung and lost
    assert scheduler.decisions() == {("sgd", 1): [1]}


class RecordingSearcher(Searcher):
    def __init__(self) -> None:
        super().__init__(metric=TARGET.best_key, mode="max")
        self.told: dict[str, float] = {}

    def suggest(self, trial_id: str) -> dict[str, Any]:
        return {"lr": 0.1}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.told[trial_id] = result[TARGET.best_key] if result else float("nan")


def test_seeds_stopped_while_waiting_are_scored_with_their_last_result() -> None:
    """Tune completes a paused trial it stops without a result; Ray's Repeater would tell the searcher NaN."""
    searcher = RecordingSearcher()
    repeater = SeedRepeater(searcher, repeat=2)
    assert repeater.suggest("a")["__trial_index__"] == 0 and repeater.suggest("b")["__trial_index__"] == 1
    repeater.on_trial_result("a", {TARGET.best_key: 0.6, "epoch": 2})
    repeater.on_trial_result("b", {TARGET.best_key: 0.8, "epoch": 2})
    repeater.on_trial_complete("a")  # stopped while paused at the rung: no result
    repeater.on_trial_complete("b", {TARGET.best_key: 0.8, "epoch": 2})
    assert searcher.told == {"a": pytest.approx(0.7)}
