"""The experiment's target: read from study.json, carried by the tables, and the columns it names;
experiments from before targets (val_acc, no record) load as they always did."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import ADAM, MSE, PERPLEXITY, FakeTrial, rising, standard_experiment, write_experiment

from optsweep import analysis
from optsweep.analysis.loading import curve_columns, metric_columns
from optsweep.analysis.target import resolve
from optsweep.vocabulary import DEFAULT_TARGET, STUDY_FILE, TARGET_RECORD_KEY, Target

PPL = PERPLEXITY.target


@pytest.fixture(scope="module")
def ppl_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_experiment(tmp_path_factory.mktemp("ppl") / "exp", kind=PERPLEXITY)


@pytest.fixture(scope="module")
def ppl_trials(ppl_experiment: Path) -> pd.DataFrame:
    return analysis.load(ppl_experiment)


def _row(trials: pd.DataFrame, optimizer: str, seed: int, **hparams: float) -> pd.Series:
    mask = (trials["optimizer"] == optimizer) & (trials["seed"] == seed)
    for key, value in hparams.items():
        mask &= trials[key] == value
    rows = trials[mask]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# --- target_of: the study record, read defensively ---------------------------------------------


def _one_trial_experiment(root: Path, **kwargs: object) -> Path:
    return write_experiment(root, [FakeTrial("adam", 0, ADAM, rising(0.9))], **kwargs)


def test_target_of_reads_the_study_record(tmp_path: Path, ppl_experiment: Path) -> None:
    assert analysis.target_of(ppl_experiment) == Target("perplexity", "min")
    assert analysis.target_of(ppl_experiment / "adam") == PPL  # one optimizer's Tune directory
    mse = standard_experiment(tmp_path / "mse", kind=MSE)
    assert analysis.target_of(mse) == Target("mse", "min")


def test_experiments_without_a_target_are_val_acc_max(tmp_path: Path) -> None:
    no_record = _one_trial_experiment(tmp_path / "old", record_target=False)
    assert analysis.target_of(no_record) == DEFAULT_TARGET == Target("acc", "max")
    without_key = _one_trial_experiment(tmp_path / "nokey", record_target=False)
    (without_key / STUDY_FILE).write_text(json.dumps({"name": "nokey", "num_samples": 4}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a record from before targets is not damaged: no warning
        assert analysis.target_of(without_key) == DEFAULT_TARGET


@pytest.mark.parametrize(
    "text",
    [
        '{"target": {"metric": "perplexity", "mo',  # cut off by a crash
        "[1, 2]",  # not an object
        json.dumps({TARGET_RECORD_KEY: {"metric": "mse", "mode": "lowest"}}),  # an invalid mode
        json.dumps({TARGET_RECORD_KEY: {"metric": "mse"}}),  # no mode
        json.dumps({TARGET_RECORD_KEY: "mse"}),
    ],
)
def test_a_damaged_record_warns_and_falls_back_to_the_default(tmp_path: Path, text: str) -> None:
    root = _one_trial_experiment(tmp_path / "exp", record_target=False)
    (root / STUDY_FILE).write_text(text)
    with pytest.warns(UserWarning, match="unreadable study record"):
        assert analysis.target_of(root) == DEFAULT_TARGET
    with pytest.warns(UserWarning, match="unreadable study record"):
        assert "best_val_acc" in analysis.load(root).columns


def test_an_explicit_target_overrides_the_record(ppl_experiment: Path) -> None:
    trials = analysis.load(ppl_experiment, target=Target("acc", "max"))
    assert trials.attrs["target"] == Target("acc", "max")
    best = _row(trials, "adam", 1, lr=1e-3, weight_decay=0.0)["best_val_acc"]
    assert best == pytest.approx(1 / PERPLEXITY.mirror(0.96), abs=1e-6)  # the highest token accuracy


# --- the tables name and compute the target's columns ------------------------------------------


def test_min_metric_trials_table(ppl_trials: pd.DataFrame) -> None:
    assert ppl_trials.attrs["target"] == PPL
    head = list(ppl_trials.columns)
    status = head.index("status")
    assert head[status : status + 10] == [
        "status",
        "epochs",
        "best_val_perplexity",
        "best_epoch",
        "final_val_perplexity",
        "final_train_loss",
        "test_perplexity",
        "test_acc",  # the task's other metric
        "time_s",
        "node_id",
    ]
    assert head[status : status + 10] == metric_columns(PPL, ["acc", "perplexity"])
    assert "best_val_acc" not in head
    row = _row(ppl_trials, "adam", 1, lr=1e-3, weight_decay=0.0)
    assert row["best_val_perplexity"] == pytest.approx(PERPLEXITY.mirror(0.96))  # the lowest epoch
    assert row["best_val_perplexity"] == pytest.approx(min(map(PERPLEXITY.mirror, rising(0.96))))
    assert row["final_val_perplexity"] == pytest.approx(PERPLEXITY.mirror(0.96))
    assert row["final_train_loss"] == pytest.approx(math.log(PERPLEXITY.mirror(0.96)))
    assert row["test_perplexity"] == pytest.approx(PERPLEXITY.mirror(0.96 - 0.02))


def test_min_metric_diverged_trials_ignore_the_sentinel(ppl_trials: pd.DataFrame) -> None:
    diverged = _row(ppl_trials, "adam", 0, lr=0.1)
    # Epochs 1.2 (0.99) then a diverged line reporting target.worst = 1e9: the best is the 1.2.
    assert diverged["status"] == "diverged"
    assert diverged["best_val_perplexity"] == pytest.approx(PERPLEXITY.mirror(0.99))
    assert diverged[["final_val_perplexity", "test_perplexity", "test_acc"]].isna().all()
    assert math.isnan(_row(ppl_trials, "sgd", 0, lr=1.0)["best_val_perplexity"])


def test_curves_hold_every_reported_metric(ppl_experiment: Path) -> None:
    curves = analysis.curves(ppl_experiment)
    assert curves.attrs["target"] == PPL
    assert list(curves.columns) == curve_columns(PPL, ["acc"], test_loss=True)
    assert list(curves.columns[6:12]) == [
        "train_loss",
        "val_loss",
        "test_loss",
        "val_perplexity",
        "test_perplexity",
        "val_acc",
    ]
    assert curves.columns[12] == "test_acc"
    diverged = curves[curves["diverged"]]
    assert len(diverged) == 4 and diverged[["val_perplexity", "train_loss", "val_loss"]].isna().all().all()
    clean = curves[~curves["diverged"]]
    assert clean["val_perplexity"].between(1.0, 21.0).all()  # no 1e9 sentinel left
    assert clean["test_perplexity"].notna().all()  # reported every epoch, as the loop does


def test_a_legacy_experiment_loads_as_before(tmp_path: Path) -> None:
    """What experiments from before targets hold (test_acc on the last line only, val_acc 0 on a
    diverged line, no best_val_acc, no study.json) gives the same tables as today's lines, except
    that trials which did not reach their last epoch have no test accuracy."""
    old = analysis.load(standard_experiment(tmp_path / "old", legacy=True))
    new = analysis.load(standard_experiment(tmp_path / "new"))
    assert old.attrs["target"] == new.attrs["target"] == DEFAULT_TARGET
    assert list(old.columns) == list(new.columns)
    ran_to_the_end = new["epochs"] >= new["max_epochs"]
    assert old.loc[~ran_to_the_end, "test_acc"].isna().all()
    assert new.loc[(new["status"] == "stopped_early"), "test_acc"].notna().all()
    same = [c for c in old.columns if c != "test_acc"]
    pd.testing.assert_frame_equal(old[same], new[same])
    pd.testing.assert_series_equal(old.loc[ran_to_the_end, "test_acc"], new.loc[ran_to_the_end, "test_acc"])
    columns = ["optimizer", "config_id", "mean", "std", "ci_low", "ci_high", "test_acc_mean"]
    pd.testing.assert_frame_equal(analysis.summarize(old)[columns], analysis.summarize(new)[columns])
    old_curves = analysis.curves(tmp_path / "old")
    assert old_curves.loc[old_curves["diverged"], ["val_acc", "test_acc"]].isna().all().all()


def test_a_table_without_its_target_is_refused_rather_than_misread(ppl_trials: pd.DataFrame) -> None:
    bare = pd.DataFrame(ppl_trials)
    bare.attrs = {}
    with pytest.raises(ValueError, match="best_val_perplexity but no target"):
        analysis.summarize(bare)
    assert resolve(bare, PPL) == PPL
    assert analysis.summarize(bare, target=PPL)["config_id"].tolist() == [
        "adam-c01",
        "sgd-c01",
    ]
    copied = ppl_trials[ppl_trials["optimizer"] == "adam"]
    assert resolve(copied) == PPL  # the target survives selections


def test_tables_read_back_from_csv_need_their_target(ppl_experiment: Path, tmp_path: Path) -> None:
    trials = analysis.load(ppl_experiment)
    summary = analysis.summarize(trials)
    budget = analysis.tuning_budget(trials)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    budget.to_csv(tmp_path / "budget.csv", index=False)
    summary_csv, budget_csv = pd.read_csv(tmp_path / "summary.csv"), pd.read_csv(tmp_path / "budget.csv")
    with pytest.raises(ValueError, match="test_perplexity_mean but no target"):
        analysis.verdict(summary_csv)
    with pytest.raises(ValueError, match="expected_min but no target"):
        analysis.plots.tuning_budget(budget_csv)
    assert analysis.verdict(summary_csv, target=PPL) == analysis.verdict(summary)
    figure = analysis.plots.tuning_budget(budget_csv, target=PPL)
    assert figure.axes[0].get_ylabel().endswith("(lower is better)")


def test_every_kind_of_value_is_read_from_one_vocabulary() -> None:
    # The loop's keys and the table's columns come from the same Target properties.
    assert (PPL.key, PPL.best_key, PPL.final_key, PPL.test_key) == (
        "val_perplexity",
        "best_val_perplexity",
        "final_val_perplexity",
        "test_perplexity",
    )
    assert analysis.test_mean_column(PPL) == "test_perplexity_mean"
    assert analysis.test_mean_column(DEFAULT_TARGET) == "test_acc_mean"
    assert np.isclose(PPL.worst, 1e9)
