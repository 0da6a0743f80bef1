"""Metrics that would mislead (issue 24, items 4-6): a NaN validation value ends a run as diverged and says
which value, from which epoch (plain loop and fused members alike); the progress line never shows the
diverged sentinel as a best value; a metric of the wrong shape is refused by the early task check; a
configuration's id is the same fused or not."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from optsweep.sweeps.monitoring.progress import ProgressLine
from optsweep.sweeps.record.trial_identity import ConfigurationIds
from optsweep.trainables import loop, sessions, tasks
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused import train_fused
from optsweep.vocabulary import DIVERGED_REASON, DIVERGED_VALUE, Target

DIGITS = tasks.build_task("digits")


class _NaNWhenEvaluated(nn.Module):
    """Trains normally; its outputs are NaN in eval mode (what the validation pass sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x.flatten(1))
        return out if self.training else out * math.nan


def _nan_metric(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.full((len(targets),), math.nan)


NAN_LOSS_TASK = dataclasses.replace(DIGITS, name="nan-on-validation", model=_NaNWhenEvaluated, max_epochs=3)
NAN_METRIC_TASK = dataclasses.replace(
    DIGITS,
    name="nan-metric",
    metrics={"score": tasks.Metric(_nan_metric)},
    target=Target("score", "min"),
    max_epochs=3,
)


@pytest.mark.parametrize(("task", "key"), [(NAN_LOSS_TASK, "val_loss"), (NAN_METRIC_TASK, "val_score")])
def test_a_nan_validation_value_ends_the_run_as_diverged_and_names_it(task: tasks.Task, key: str) -> None:
    session = sessions.LocalSession()
    last = loop.train(TrainConfig(optimizer="adam", hparams={"lr": 1e-3}), session, task=task)
    assert len(session.reports) == 1
    assert last["diverged"] is True
    assert last[DIVERGED_REASON] == f"{key} is nan at epoch 1"
    assert last[task.target.best_key] == task.target.worst  # no valid epoch: the sentinel, flagged


def test_a_fused_member_with_a_nan_validation_value_is_diverged_with_its_reason() -> None:
    configs = [TrainConfig(optimizer="adam", hparams={"lr": lr}, seed=0) for lr in (1e-3, 1e-2)]
    members = train_fused(configs, task=NAN_METRIC_TASK)
    for member in members:
        assert len(member.reports) == 1
        assert member.reports[0]["diverged"] is True
        assert member.reports[0][DIVERGED_REASON] == "val_score is nan at epoch 1"


def test_training_divergence_says_why() -> None:
    session = sessions.LocalSession()
    last = loop.train(TrainConfig(optimizer="sgd", hparams={"lr": 1e4}, max_epochs=5), session)
    assert last["diverged"] is True
    assert "train_loss" in last[DIVERGED_REASON] and "epoch 1" in last[DIVERGED_REASON]


def test_the_progress_line_never_shows_the_diverged_sentinel_as_the_best() -> None:
    out = io.StringIO()
    min_target = Target("mse", "min")
    diverged = SimpleNamespace(
        trial_id="t_00000",
        status="TERMINATED",
        last_result={"epoch": 1, "best_val_mse": DIVERGED_VALUE, "diverged": True},
        config={"optimizer": "adam", "__configuration": 0, "seed": 0, "lr": 1.0},
    )
    ProgressLine("adam", total=2, target=min_target, stream=out).on_experiment_end([diverged])
    assert "best" not in out.getvalue() and "1000000000" not in out.getvalue(), out.getvalue()


def _two_by_two_digits(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(targets), 2)


def _already_averaged(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(-1) == targets).float().mean()


@pytest.mark.parametrize(("values", "shape"), [(_two_by_two_digits, "(2, 2)"), (_already_averaged, "()")])
def test_a_metric_of_the_wrong_shape_is_refused_in_one_line(values: object, shape: str) -> None:
    task = dataclasses.replace(DIGITS, metrics={"acc": tasks.Metric(values)})  # type: ignore[arg-type]
    with pytest.raises(tasks.TaskError) as error:
        tasks.check(task)
    message = str(error.value)
    assert "\n" not in message
    assert "metric 'acc' must return one value per example or per target element" in message
    assert f"got shape {shape}" in message


def test_per_example_and_per_element_metrics_pass_the_check() -> None:
    tasks.check(DIGITS)  # accuracy: one value per example
    tasks.check(tasks.build_task("pydoc_lm"))  # perplexity: one value per target token, flattened


def test_a_configurations_id_is_its_number_whatever_the_order_trials_appear_in() -> None:
    """Fused groups and unfused trials reach Tune in different orders; the id follows the configuration."""
    ids = ConfigurationIds()
    trials = [
        SimpleNamespace(trial_id=f"t_{i:05d}", config={"optimizer": "sgd", "__configuration": n, "lr": lr})
        for i, (n, lr) in enumerate([(2, 0.3), (0, 0.1), (1, 0.2)])
    ]
    ids.update(trials)
    assert [ids.of(t).config_id for t in trials] == ["sgd-c03", "sgd-c01", "sgd-c02"]


def test_the_report_names_the_nan_its_trial_and_epoch(tmp_path: Path) -> None:
    from analysis_fixtures import FakeTrial, rising, write_experiment

    from optsweep import analysis

    reason = "val_loss is nan at epoch 3"
    trials = [FakeTrial("adam", seed, {"lr": 1e-3}, rising(0.9), configuration=0) for seed in range(3)] + [
        FakeTrial("adam", 0, {"lr": 1.0}, [0.5, 0.6], diverged=True, diverged_reason=reason, configuration=1)
    ]
    experiment = write_experiment(tmp_path / "exp", trials)
    table = analysis.load(experiment)
    row = table[table["status"] == "diverged"].iloc[0]
    assert row["diverged_reason"] == reason
    notes = analysis.caveats(table, analysis.summarize(table))
    assert any(f"trial {row['trial_id']}: {reason}" in note for note in notes), notes
