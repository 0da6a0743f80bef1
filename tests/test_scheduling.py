"""One scheduler for a whole study (one Tune experiment, trials labelled by `config["optimizer"]`): for
multi-worker trials Ray's ASHA judges each optimizer's trials only against the same optimizer's
(`PerOptimizer`), and the next trial to run goes round the optimizers."""

from __future__ import annotations

import functools
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from optsweep.sweeps.early_stopping.halving import ConfigurationHalving
from optsweep.sweeps.early_stopping.per_optimizer import OptimizerView, PerOptimizer
from optsweep.sweeps.early_stopping.scheduling import StopAtEpochEnd, asha_at_epoch_end, build_scheduler

EPOCHS = 20


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = Trial.PENDING


@dataclass
class FakeController:
    trials: list[FakeTrial] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def stop_trial(self, trial: FakeTrial) -> None:  # reached through OptimizerView's forwarding
        self.stopped.append(trial.trial_id)


def curve(optimizer: str, k: int, epoch: int) -> float:
    """sgd's trials all score above adam's: judged together, sgd's would stop every adam trial."""
    quality = ((k * 7919) % 11) / 11
    return (0.5 if optimizer == "sgd" else 0.0) + quality * (1 - 0.7**epoch)


def run_asha(scheduler: TrialScheduler, trials: list[FakeTrial], order_seed: int) -> dict[str, list[str]]:
    """Feeds every trial's epochs to `scheduler` (each epoch's results in a random order that ranks any two
    trials alike whatever other trials there are; a stopped trial reports no more); returns trial_id -> its
    decisions."""
    controller = FakeController(trials)
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    decisions: dict[str, list[str]] = {t.trial_id: [] for t in trials}
    for epoch in range(1, EPOCHS + 1):
        for trial in sorted(
            trials, key=lambda t: random.Random(f"{order_seed}/{epoch}/{t.trial_id}").random()
        ):
            if trial.status == Trial.TERMINATED:
                continue
            optimizer, k = trial.config["optimizer"], trial.config["k"]
            result = {"epoch": epoch, "acc": curve(optimizer, k, epoch)}
            decision = scheduler.on_trial_result(controller, trial, result)
            decisions[trial.trial_id].append(decision)
            if decision == TrialScheduler.STOP or epoch == EPOCHS:
                trial.status = Trial.TERMINATED
                scheduler.on_trial_complete(controller, trial, result)
    return decisions


def trials_of(*optimizers: str, count: int = 9) -> list[FakeTrial]:
    """`count` trials per optimizer, created round-robin over the optimizers (as the study's searcher)."""
    return [
        FakeTrial(f"{o}{k}", {"optimizer": o, "k": k, "settings": {}})
        for k in range(count)
        for o in optimizers
    ]


def asha_for_multi_worker_trials(**kwargs: Any) -> TrialScheduler:
    scheduler = build_scheduler("asha", EPOCHS, 2, **kwargs)
    assert scheduler.set_search_properties("acc", "max")
    return scheduler


@pytest.mark.parametrize("order_seed", range(3))
def test_adams_rung_decisions_ignore_sgds_results(order_seed: int) -> None:
    together = run_asha(asha_for_multi_worker_trials(), trials_of("adam", "sgd"), order_seed)
    alone = asha_at_epoch_end(EPOCHS)
    alone.set_search_properties("acc", "max")
    # The same order of adam's results, without sgd's among them.
    adam_alone = run_asha(alone, trials_of("adam"), order_seed)
    assert {t: d for t, d in together.items() if t.startswith("adam")} == adam_alone
    assert any(TrialScheduler.STOP in d for d in adam_alone.values())  # ASHA did stop some of adam's
    # The best adam trial trains the full budget. One ASHA for both optimizers stops it at the first rung
    # where sgd's better results are on record (and the comparison above would fail).
    best = max(range(9), key=lambda k: curve("adam", k, EPOCHS))
    assert len(together[f"adam{best}"]) == EPOCHS
    shared = asha_at_epoch_end(EPOCHS)
    shared.set_search_properties("acc", "max")
    mixed = run_asha(shared, trials_of("adam", "sgd"), order_seed)
    assert len(mixed[f"adam{best}"]) < EPOCHS


def test_the_next_trial_to_run_goes_round_the_optimizers() -> None:
    """Each optimizer's scheduler sees only its own trials; they are asked in turn."""
    scheduler = PerOptimizer(FIFOScheduler, optimizers=["sgd", "adam"])
    trials = trials_of("adam", "sgd", count=3) + trials_of("rmsprop", count=1)
    controller = FakeController(trials)
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    chosen = []
    while (trial := scheduler.choose_trial_to_run(controller)) is not None:
        trial.status = Trial.RUNNING
        chosen.append(trial.trial_id)
    # The study's order first (sgd, adam), then labels in the order their trials appear.
    assert chosen == ["sgd0", "adam0", "rmsprop0", "sgd1", "adam1", "sgd2", "adam2"]
    assert list(scheduler.schedulers) == ["sgd", "adam", "rmsprop"]
    view = OptimizerView(controller, "adam")  # type: ignore[arg-type]
    assert [t.trial_id for t in view.get_trials()] == ["adam0", "adam1", "adam2"]
    view.stop_trial(trials[0])  # anything else is the controller's
    assert controller.stopped == ["adam0"]


def test_the_scheduler_is_one_per_optimizer_and_pickles_with_tunes_metric() -> None:
    scheduler = asha_for_multi_worker_trials(optimizers=["adam"])
    assert isinstance(scheduler, PerOptimizer) and scheduler.metric == "acc"
    assert isinstance(scheduler.scheduler_of("adam"), StopAtEpochEnd)
    assert scheduler.scheduler_of("adam").metric == "acc"
    # Tune keeps the scheduler in tuner.pkl; a label first seen after a restore gets Tune's metric too.
    restored = pickle.loads(pickle.dumps(scheduler))
    sgd = restored.scheduler_of("sgd")
    assert isinstance(sgd, StopAtEpochEnd) and sgd.metric == "acc"
    assert restored.scheduler_of("adam") is not sgd
    assert isinstance(build_scheduler("fifo", EPOCHS, 2), FIFOScheduler)
    halving = build_scheduler("asha", EPOCHS, 1, configurations=4, seeds=2, max_running=3, optimizers=["a"])
    assert isinstance(halving, ConfigurationHalving) and halving.max_running == 3


def test_a_metric_set_on_the_inner_scheduler_is_refused_when_tune_sets_its_own() -> None:
    from ray.tune.schedulers import ASHAScheduler

    scheduler = PerOptimizer(functools.partial(ASHAScheduler, metric="loss", mode="min"))
    assert scheduler.set_search_properties("acc", "max")
    with pytest.raises(ValueError, match="refuses Tune's metric 'acc'"):
        scheduler.scheduler_of("adam")


def adam_and_sgd_trainable(epochs: int) -> Any:
    # Built inside a function, its curves a table, so that cloudpickle ships it by value: Ray's workers
    # cannot import tests/.
    table = {
        (o, k): [curve(o, k, e) for e in range(1, epochs + 1)] for o in ("adam", "sgd") for k in range(4)
    }

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        for epoch, acc in enumerate(table[(config["optimizer"], config["k"])], start=1):
            tune.report({"epoch": epoch, "acc": acc})

    return trainable


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("ray_session")
def test_per_optimizer_asha_in_a_real_tune_experiment(tmp_path: Path) -> None:
    """Through Tune's controller (its TrialRunnerWrapper): every trial runs; the best trial of each
    optimizer trains every epoch although sgd's trials all score above adam's."""
    from ray import tune

    scheduler = PerOptimizer(functools.partial(asha_at_epoch_end, 6), optimizers=["adam", "sgd"])
    tuner = tune.Tuner(
        adam_and_sgd_trainable(6),
        param_space={"optimizer": tune.grid_search(["adam", "sgd"]), "k": tune.grid_search(list(range(4)))},
        tune_config=tune.TuneConfig(metric="acc", mode="max", scheduler=scheduler),
        run_config=tune.RunConfig(name="per_optimizer", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors and len(results) == 8
    for optimizer in ("adam", "sgd"):
        mine = [r for r in results if r.config["optimizer"] == optimizer]
        best = max(mine, key=lambda r: curve(optimizer, r.config["k"], 6))
        assert best.metrics["epoch"] == 6
