"""Per-configuration halving over fused groups (issues 12 and 14), driven the way Tune drives a scheduler,
without Ray: a group is one trial whose members report together; it pauses at a rung, learns the
decisions from the scheduler's state file (as `trainables.fused_trial` does) and drops the members of
eliminated configurations. Its decisions and every member's epochs must be those of the unfused sweep."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ray.tune.experiment import Trial
from test_halving import TARGET, TWO, FakeController, accuracy, alone_and_together, simulate

from optsweep.sweeps.early_stopping.halving import ConfigurationHalving, StateFileDecisions
from optsweep.sweeps.spec import StudySpec


@dataclass
class FakeGroup:
    trial_id: str
    config: dict[str, Any]
    status: str = Trial.PENDING
    is_saving: bool = False
    epoch: int = 0
    active: list[int] = field(default_factory=list)
    best: dict[int, float] = field(default_factory=dict)
    last_epoch: dict[int, int] = field(default_factory=dict)
    last_result: dict[str, Any] = field(default_factory=dict)

    def set_status(self, status: str) -> None:
        self.status = status


def simulate_fused(
    configurations: int,
    seeds: int,
    max_epochs: int,
    group_size: int,
    *,
    order_seed: int,
    slots: int,
    state_file: Path,
    diverge: frozenset[tuple[int, int]] = frozenset(),
    max_running: int | None = None,
    optimizers: tuple[str, ...] = ("adam",),
    running_log: list[list[int]] | None = None,
) -> tuple[dict, dict[str, int]]:
    """Returns (decisions, last epoch per member named as the unfused trial t<cc>_<s>, with the optimizer's
    name after it when there are several). `optimizers`: one experiment, every optimizer's groups created
    round-robin over them (a group trains one optimizer's members); `max_running` is checked per
    optimizer at every step; `running_log` gets each step's running groups per optimizer."""
    units = list(itertools.product(range(configurations), range(seeds)))
    groups = [units[i : i + group_size] for i in range(0, len(units), group_size)]
    suffix = {o: f"_{o}" if len(optimizers) > 1 else "" for o in optimizers}
    trials = [
        FakeGroup(
            f"g{g}{suffix[o]}",
            {
                "optimizer": o,
                "__members": [{"__configuration": c, "seed": s, "lr": 0.1} for c, s in members],
            },
            active=list(range(len(members))),
        )
        for g, members in enumerate(groups)
        for o in optimizers
    ]
    controller = FakeController(trials)  # type: ignore[arg-type]
    scheduler = ConfigurationHalving(
        TARGET, max_epochs, configurations, seeds, state_file=str(state_file), max_running=max_running
    )
    controller.scheduler = scheduler
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    decisions = StateFileDecisions(str(state_file))

    def member(trial: FakeGroup, k: int) -> tuple[int, int]:
        m = trial.config["__members"][k]
        return m["__configuration"], m["seed"]

    def drop_eliminated(trial: FakeGroup) -> None:
        eliminated = decisions.eliminated(trial.config["optimizer"], trial.epoch)
        trial.active = [k for k in trial.active if member(trial, k)[0] not in eliminated]

    def finish(trial: FakeGroup, result: dict[str, Any]) -> None:
        trial.status = Trial.TERMINATED
        scheduler.on_trial_complete(controller, trial, result)

    rng = random.Random(order_seed)
    pausing: list[FakeGroup] = []
    for _ in range(100_000):
        for trial in [t for t in pausing if rng.random() < 0.5]:
            pausing.remove(trial)
            if trial.status == Trial.RUNNING:
                trial.status = Trial.PAUSED
        running = [t for t in trials if t.status == Trial.RUNNING]
        while len(running) < slots:
            chosen = scheduler.choose_trial_to_run(controller)
            if chosen is None:
                break
            chosen.status = Trial.RUNNING
            drop_eliminated(chosen)  # as the trial does when it resumes from its checkpoint
            running.append(chosen)
        # Then Tune starts every pending trial it has resources for, whether the scheduler chose it or not.
        for trial in [t for t in trials if t.status == Trial.PENDING][: slots - len(running)]:
            trial.status = Trial.RUNNING
            running.append(trial)
        by_optimizer = [sum(t.config["optimizer"] == o for t in running) for o in optimizers]
        assert max_running is None or max(by_optimizer) <= max_running, by_optimizer
        if running_log is not None:
            running_log.append(by_optimizer)
        if not running and not pausing:
            break
        reporting = [t for t in running if t not in pausing]
        if not reporting:
            continue
        trial = rng.choice(reporting)
        if not trial.active:  # every member diverged or left: the trial ends itself
            finish(trial, {"epoch": trial.epoch})
            continue
        trial.epoch += 1
        reports: dict[str, dict[str, Any]] = {}
        for k in list(trial.active):
            c, s = member(trial, k)
            value = accuracy(c, s, trial.epoch, set(diverge), trial.config["optimizer"])
            trial.last_epoch[k] = trial.epoch
            if value is None:
                trial.active.remove(k)  # frozen, reported diverged once
                reports[str(k)] = {"epoch": trial.epoch, "diverged": True, TARGET.best_key: TARGET.worst}
                continue
            trial.best[k] = max(trial.best.get(k, -1.0), value)
            reports[str(k)] = {"epoch": trial.epoch, "diverged": False, TARGET.best_key: trial.best[k]}
        result: dict[str, Any] = {"epoch": trial.epoch, "members": reports}
        if trial.epoch % 2 == 0:  # rungs 2, 6, 18: as Tune hands them to schedulers, flattened
            flat = {f"members/{k}/{key}": v for k, metrics in reports.items() for key, v in metrics.items()}
            result = {"epoch": trial.epoch} | flat
        trial.last_result = result
        decision = scheduler.on_trial_result(controller, trial, result)
        if decision == scheduler.PAUSE:
            pausing.append(trial)
        elif decision == scheduler.STOP or trial.epoch == max_epochs:
            finish(trial, result)
        else:
            drop_eliminated(trial)  # as the trial does after each report
            if not trial.active:
                finish(trial, result)
    else:
        raise AssertionError("the simulated sweep does not end")
    assert {t.status for t in trials} == {Trial.TERMINATED}
    epochs = {}
    for trial in trials:
        for k in range(len(trial.config["__members"])):
            c, s = member(trial, k)
            epochs[f"t{c:02d}_{s}{suffix[trial.config['optimizer']]}"] = trial.last_epoch.get(k, 0)
    return scheduler.decisions(), epochs


@pytest.mark.parametrize(("group_size", "slots"), [(24, 1), (5, 2), (7, 3), (1, 2)])
def test_fused_groups_stop_exactly_the_configurations_unfused_trials_stop(
    tmp_path: Path, group_size: int, slots: int
) -> None:
    unfused_decisions, unfused_epochs, _ = simulate(8, 3, 20, order_seed=0, slots=2)
    decisions, epochs = simulate_fused(
        8, 3, 20, group_size, order_seed=group_size, slots=slots, state_file=tmp_path / "state.json"
    )
    assert decisions == unfused_decisions
    assert epochs == unfused_epochs


def test_a_diverged_member_fails_its_configuration_as_an_unfused_seed_does(tmp_path: Path) -> None:
    diverge = frozenset({(5, 1)})
    unfused_decisions, unfused_epochs, _ = simulate(6, 2, 20, order_seed=0, slots=3, diverge=diverge)
    decisions, epochs = simulate_fused(
        6, 2, 20, 4, order_seed=1, slots=2, state_file=tmp_path / "state.json", diverge=diverge
    )
    assert decisions == unfused_decisions
    assert epochs["t05_1"] == 3
    # Unfused, the healthy seed of a failed configuration may run on until it is stopped; fused, its
    # group carries it to the same rung, where it is dropped.
    assert {k: e for k, e in epochs.items() if not k.startswith("t05")} == {
        k: e for k, e in unfused_epochs.items() if not k.startswith("t05")
    }


def test_a_trial_tune_retries_after_a_crash_does_not_fail_its_configuration(tmp_path: Path) -> None:
    """Tune calls on_trial_error also when it requeues a crashed trial to retry it from its checkpoint."""

    @dataclass
    class Retried:
        trial_id: str
        config: dict[str, Any]
        retries_left: bool
        status: str = Trial.RUNNING

        def should_recover(self) -> bool:
            return self.retries_left

    scheduler = ConfigurationHalving(TARGET, 20, 2, 1)
    controller = FakeController([])  # type: ignore[arg-type]
    retried = Retried("t0", {"optimizer": "adam", "__configuration": 0, "seed": 0}, retries_left=True)
    failed = Retried("t1", {"optimizer": "adam", "__configuration": 1, "seed": 0}, retries_left=False)
    for trial in (retried, failed):
        scheduler.on_trial_add(controller, trial)  # type: ignore[arg-type]
        scheduler.on_trial_error(controller, trial)  # type: ignore[arg-type]
    assert scheduler.failed == {("adam", 1)}


@pytest.mark.parametrize("group_size", [1, 3])
def test_a_cap_on_running_trials_never_hangs_the_rungs(tmp_path: Path, group_size: int) -> None:
    """--max-concurrent: the scheduler caps the running trials; paused ones wait outside the cap (Tune's
    own cap counts them, so a cap below the number of trials never let the rest reach the rung)."""
    unfused_decisions, unfused_epochs, _ = simulate(6, 2, 20, order_seed=0, slots=2)
    decisions, epochs = simulate_fused(
        6, 2, 20, group_size, order_seed=3, slots=4, state_file=tmp_path / "s.json", max_running=1
    )
    assert (decisions, epochs) == (unfused_decisions, unfused_epochs)


@pytest.mark.parametrize(("group_size", "slots", "max_running"), [(5, 2, None), (3, 6, 1), (1, 4, 2)])
def test_two_optimizers_fused_groups_in_one_experiment_decide_as_each_alone_unfused(
    tmp_path: Path, group_size: int, slots: int, max_running: int | None
) -> None:
    """adam's and sgd's fused groups in one experiment, one state file: each optimizer's decisions and
    members' epochs are those of its unfused sweep alone, and its groups never exceed its cap (which is
    each optimizer's: both run up to it side by side)."""
    log: list[list[int]] = []
    decisions, epochs = simulate_fused(
        8,
        3,
        20,
        group_size,
        order_seed=group_size,
        slots=slots,
        state_file=tmp_path / "state.json",
        max_running=max_running,
        optimizers=TWO,
        running_log=log,
    )
    assert max_running is None or [max_running] * 2 in log
    for optimizer in TWO:
        alone = simulate(8, 3, 20, order_seed=0, slots=2, optimizers=(optimizer,))
        assert alone_and_together((decisions, epochs, {}), optimizer) == alone[:2]


def test_a_resumed_study_takes_this_runs_cap_and_an_old_pickle_has_none(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from optsweep.sweeps.runner import safeguards

    scheduler = ConfigurationHalving(TARGET, 20, 2, 1, max_running=3)
    config = SimpleNamespace(scheduler=scheduler, search_alg=None, max_concurrent_trials=3)
    tuner = SimpleNamespace(_local_tuner=SimpleNamespace(_tune_config=config))
    safeguards.restored(tuner, StudySpec(name="x", storage_path=str(tmp_path), max_concurrent=1))
    # (Tune's own cap beside it is the runner's business: tested with the runner.)
    assert scheduler.max_running == 1
    state = scheduler.__getstate__()
    del state["max_running"]  # as pickled in a tuner.pkl written before the cap existed
    old = ConfigurationHalving.__new__(ConfigurationHalving)
    old.__setstate__(state)
    assert old.max_running is None
