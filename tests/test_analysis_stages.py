"""Stages (search chooses, confirmation reports), what the runner confirms, config ids that do not depend
on fusion, one selection rule for the test metric, and configs or sentinels that must never reach a table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import ADAM, MSE, SGD, FakeTrial, rising, write_experiment
from scipy import stats as scipy_stats

from optsweep import analysis
from optsweep.analysis import plots
from optsweep.vocabulary import CONFIRM, DIVERGED_VALUE, SEARCH

ADAM_SEARCH = {0: [0.95, 0.96, 0.97], 1: [0.90, 0.91, 0.92], 2: [0.93, 0.94, 0.94]}  # configuration -> seeds
SGD_SEARCH = {0: [0.80, 0.81, 0.82], 3: [0.93, 0.94, 0.95]}
ADAM_CONFIRM = [0.94, 0.95, 0.93, 0.94]  # configuration 0, fresh seeds: lower than its search mean
SGD_CONFIRM = [0.92, 0.93, 0.91, 0.92]  # configuration 3


def _hparams(base: dict, configuration: int) -> dict:
    return {**base, "lr": base["lr"] * (configuration + 1)}


def staged_trials(confirm: bool = True) -> list[FakeTrial]:
    trials = []
    for optimizer, base, search, fresh, chosen in (
        ("adam", ADAM, ADAM_SEARCH, ADAM_CONFIRM, 0),
        ("sgd", SGD, SGD_SEARCH, SGD_CONFIRM, 3),
    ):
        for configuration, values in search.items():
            for seed, best in enumerate(values):
                hparams = _hparams(base, configuration)
                trials.append(FakeTrial(optimizer, seed, hparams, rising(best), configuration=configuration))
        for seed, best in enumerate(fresh if confirm else []):
            hparams = _hparams(base, chosen)
            trials.append(
                FakeTrial(optimizer, 100 + seed, hparams, rising(best), configuration=chosen, stage=CONFIRM)
            )
    return trials


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_experiment(tmp_path_factory.mktemp("stages") / "exp", staged_trials())


@pytest.fixture(scope="module")
def trials(staged: Path) -> pd.DataFrame:
    return analysis.load(staged)


def test_trials_carry_stage_and_configuration(trials: pd.DataFrame) -> None:
    assert set(trials["stage"]) == {SEARCH, CONFIRM}
    confirm = trials[trials["stage"] == CONFIRM]
    # A confirmation trial has the config_id of the search configuration it confirms.
    assert set(confirm.loc[confirm["optimizer"] == "adam", "config_id"]) == {"adam-c01"}
    assert set(confirm.loc[confirm["optimizer"] == "sgd", "config_id"]) == {"sgd-c04"}
    assert trials.groupby("config_id")["configuration"].first().to_dict() == {
        "adam-c01": 0,
        "adam-c02": 1,
        "adam-c03": 2,
        "sgd-c01": 0,
        "sgd-c04": 3,
    }


def test_summary_reports_the_confirmation_seeds(trials: pd.DataFrame) -> None:
    summary = analysis.summarize(trials).set_index("optimizer")
    assert summary["reported_from"].tolist() == [CONFIRM, CONFIRM]
    for optimizer, fresh, search, config_id in (
        ("adam", ADAM_CONFIRM, ADAM_SEARCH[0], "adam-c01"),
        ("sgd", SGD_CONFIRM, SGD_SEARCH[3], "sgd-c04"),
    ):
        row = summary.loc[optimizer]
        assert row["config_id"] == config_id and row["n_seeds"] == len(fresh)
        assert row["mean"] == pytest.approx(np.mean(fresh))
        low, high = scipy_stats.t.interval(0.95, len(fresh) - 1, np.mean(fresh), scipy_stats.sem(fresh))
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
        assert row["search_mean"] == pytest.approx(np.mean(search)) and row["search_n_seeds"] == 3
    # The search stage alone still chooses (and counts configurations) as before.
    assert summary.loc["adam", "n_configs"] == 3 and summary.loc["sgd", "n_configs"] == 2
    configs = analysis.configurations(trials)
    assert configs.set_index("config_id").loc["adam-c01", "n_seeds"] == 3  # confirmation seeds not mixed in


def test_without_confirmation_the_search_reports_and_says_it_is_biased(tmp_path: Path) -> None:
    trials = analysis.load(write_experiment(tmp_path / "exp", staged_trials(confirm=False)))
    summary = analysis.summarize(trials)
    assert (summary["reported_from"] == SEARCH).all()
    assert summary.set_index("optimizer").loc["adam", "mean"] == pytest.approx(np.mean(ADAM_SEARCH[0]))
    notes = " ".join(analysis.caveats(trials, summary))
    assert "selection-biased (the winner's curse)" in notes and "fresh confirmation seeds" not in notes


def test_report_of_a_confirmed_study(staged: Path, trials: pd.DataFrame) -> None:
    report = analysis.write_report(staged)
    text = (report / "report.md").read_text()
    assert "come from fresh confirmation seeds" in text
    assert "| adam | adam-c01 |" in text and "| 4 | confirm |" in text
    assert "search val acc (mean, biased)" in text
    assert "| adam | confirm | 4 | 1 | 4 |" in text  # what was run: the stages apart
    caveat_section = text.split("## Caveats")[1].split("## Method")[0]
    assert "winner's curse does not raise them" in caveat_section
    assert "there was no confirmation stage" not in caveat_section
    spent = pd.read_csv(report / "spent.csv").set_index("optimizer")
    assert (
        spent.loc["adam", "search_trial_epochs"] == 9 * 5
        and spent.loc["adam", "confirm_trial_epochs"] == 4 * 5
    )
    assert spent.loc["adam", "trial_epochs"] == 13 * 5


def test_mixed_stages_are_named(tmp_path: Path) -> None:
    trials = [t for t in staged_trials() if not (t.optimizer == "sgd" and t.stage == CONFIRM)]
    loaded = analysis.load(write_experiment(tmp_path / "exp", trials))
    summary = analysis.summarize(loaded).set_index("optimizer")
    assert summary["reported_from"].to_dict() == {"adam": CONFIRM, "sgd": SEARCH}
    notes = " ".join(analysis.caveats(loaded, summary.reset_index()))
    assert "sgd has no confirmation trials" in notes


def test_chosen_configurations_for_the_runner(trials: pd.DataFrame) -> None:
    chosen = analysis.chosen_configurations(trials, top_k=2)
    assert list(chosen.columns) == [
        "optimizer",
        "rank",
        "config_id",
        "configuration",
        "hyperparameters",
        "search_mean",
        "n_seeds",
    ]
    assert chosen[["optimizer", "rank", "config_id", "configuration"]].values.tolist() == [
        ["adam", 1, "adam-c01", 0],
        ["adam", 2, "adam-c03", 2],
        ["sgd", 1, "sgd-c04", 3],
        ["sgd", 2, "sgd-c01", 0],
    ]
    first = chosen.iloc[0]
    assert first["hyperparameters"] == {key: value for key, value in ADAM.items()}  # no NaN of sgd's keys
    assert first["search_mean"] == pytest.approx(np.mean(ADAM_SEARCH[0])) and first["n_seeds"] == 3
    assert type(first["hyperparameters"]["lr"]) is float
    # The same choice as the summary's, from the search rows only.
    top = analysis.chosen_configurations(trials)
    assert (
        top["config_id"].tolist() == analysis.summarize(trials).sort_values("optimizer")["config_id"].tolist()
    )


@pytest.mark.parametrize("top_k", [0, -1, 1.5, "2", True])
def test_chosen_configurations_refuses_a_bad_top_k(trials: pd.DataFrame, top_k: object) -> None:
    with pytest.raises(ValueError, match=r"^invalid top_k .*: it must be a whole number >= 1$"):
        analysis.chosen_configurations(trials, top_k=top_k)  # type: ignore[arg-type]


def test_config_id_comes_from_the_configuration_number(tmp_path: Path) -> None:
    # Trial order (as fused groups or Tune would create them) does not matter, only the number.
    rows = [
        FakeTrial("sgd", 0, _hparams(SGD, 5), rising(0.9), configuration=5),
        FakeTrial("sgd", 1, _hparams(SGD, 2), rising(0.9), configuration=2),
        FakeTrial("sgd", 1, _hparams(SGD, 5), rising(0.9), configuration=5),
        FakeTrial("sgd", 2, _hparams(SGD, 5), rising(0.9)),  # no number: the same hyperparameters' id
        FakeTrial("sgd", 0, _hparams(SGD, 7), rising(0.9)),  # no number, new: the first free id
    ]
    trials = analysis.load(write_experiment(tmp_path / "exp", rows))
    assert trials.sort_values("trial_id")["config_id"].tolist() == [
        "sgd-c06",
        "sgd-c03",
        "sgd-c06",
        "sgd-c06",
        "sgd-c01",
    ]


def test_the_test_metric_is_read_at_the_best_validation_epoch(tmp_path: Path) -> None:
    # Validation peaks at epoch 2; the test value of that epoch is what the table holds.
    trial = FakeTrial("adam", 0, ADAM, [0.5, 0.9, 0.8, 0.7, 0.6], test_final=0.99)
    trials = analysis.load(write_experiment(tmp_path / "exp", [trial]))
    row = trials.iloc[0]
    assert row["best_val_acc"] == 0.9 and row["best_epoch"] == 2
    assert row["test_acc"] == pytest.approx(0.9 - 0.01)  # not 0.99, the last epoch's
    assert row["final_val_acc"] == 0.6


@pytest.mark.parametrize("bad", [["__fn_ph", "fcca4086"], "0.1", None])
def test_a_config_with_a_word_where_a_number_belongs_is_refused(tmp_path: Path, bad: object) -> None:
    good = FakeTrial("adam", 0, ADAM, rising(0.9))
    wrong = FakeTrial("adam", 1, {**ADAM, "lr": bad}, [], tune_status="ERROR", error=True)
    if bad is None:  # a number where another trial of the optimizer has one, but a list elsewhere
        wrong = FakeTrial("adam", 1, {**ADAM, "beta1": [0.9]}, rising(0.9))
    root = write_experiment(tmp_path / "exp", [good, wrong])
    with pytest.raises(analysis.BadConfigError) as caught:
        analysis.load(root)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("trial ") and "not a number" in message
    key, value = ("beta1", [0.9]) if bad is None else ("lr", bad)
    assert f"config key {key!r} holds {value!r}" in message
    if isinstance(bad, list):
        assert "unresolved sample_from" in message
    result = subprocess.run(
        [sys.executable, "-m", "optsweep.analysis.report", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr == f"error: {message}\n"


def test_an_unknown_stage_is_refused(tmp_path: Path) -> None:
    root = write_experiment(tmp_path / "exp", [FakeTrial("adam", 0, ADAM, rising(0.9), stage="final")])
    with pytest.raises(analysis.BadConfigError, match=r"'__stage' holds 'final'; allowed: search, confirm"):
        analysis.load(root)


def test_the_diverged_sentinel_is_never_a_value(tmp_path: Path) -> None:
    # A loop that reported the sentinel without marking the epoch diverged (a NaN metric, issue 24).
    sentinel = MSE.target.worst  # +1e9 for a min metric
    trials = [FakeTrial("adam", s, ADAM, [0.02, 0.01, 0.015, 0.012, 0.011]) for s in range(2)]
    trials += [FakeTrial("sgd", s, SGD, [0.03, sentinel, 0.02, 0.025, sentinel]) for s in range(2)]
    root = write_experiment(tmp_path / "exp", trials, kind=MSE)
    loaded = analysis.load(root)
    sgd = loaded[loaded["optimizer"] == "sgd"]
    assert (sgd["best_val_mse"] == 0.02).all() and sgd["final_val_mse"].isna().all()
    report = analysis.write_report(root)
    for name in ("trials.csv", "summary.csv", "tuning_budget.csv", "report.md"):
        text = (report / name).read_text()
        assert "1000000000" not in text and "1e+09" not in text and "1e9" not in text, name
    curves = analysis.curves(root)
    numeric = curves.select_dtypes("number").abs()
    assert not (numeric >= DIVERGED_VALUE).any().any()


@pytest.mark.parametrize("search", ["optuna", "random", None])
def test_the_budget_view_says_when_draws_were_not_random(tmp_path: Path, search: str | None) -> None:
    root = write_experiment(tmp_path / "exp", staged_trials(confirm=False))
    if search is not None:
        record = json.loads((root / "study.json").read_text())
        (root / "study.json").write_text(json.dumps({**record, "search": search}))
    trials = analysis.load(root)
    notes = " ".join(analysis.caveats(trials, analysis.summarize(trials)))
    assert ("assumes the configurations were random draws" in notes) == (search == "optuna")
    if search == "optuna":
        assert "this study's search was optuna" in notes


def test_three_optimizers_are_compared_with_holms_correction() -> None:
    summary = pd.DataFrame(
        [("adam", 5, 0.95, 0.004), ("adamw", 5, 0.949, 0.004), ("sgd", 5, 0.90, 0.01)],
        columns=["optimizer", "n_seeds", "mean", "std"],
    )
    summary["ci_low"], summary["ci_high"] = summary["mean"] - 0.01, summary["mean"] + 0.01
    table = analysis.compare(summary)
    raw = [
        scipy_stats.ttest_ind_from_stats(*a, *b, equal_var=False).pvalue
        for a, b in (
            ((0.95, 0.004, 5), (0.949, 0.004, 5)),
            ((0.95, 0.004, 5), (0.90, 0.01, 5)),
            ((0.949, 0.004, 5), (0.90, 0.01, 5)),
        )
    ]
    assert table["p_value"].tolist() == pytest.approx(raw)
    # Holm by hand: the i-th smallest of 3 times (3 - i), never below the one before it.
    order = np.argsort(raw)
    expected, running = [0.0] * 3, 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (3 - i) * raw[index]))
        expected[index] = running
    assert table["p_holm"].tolist() == pytest.approx(expected)
    assert table["conclusion"].tolist() == ["no significant difference", "beats", "beats"]
    text = analysis.verdict(summary)
    assert "it beats sgd (" in text and "Holm-adjusted p < 0.001" in text
    assert "among the others, adamw beats sgd (difference 0.049" in text


def test_learning_curves_draw_the_reported_seeds(staged: Path, trials: pd.DataFrame) -> None:
    summary = analysis.summarize(trials)
    curves = analysis.curves(staged)
    assert set(curves["stage"]) == {SEARCH, CONFIRM}
    figure = plots.learning_curves(curves, summary)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith("adam (adam-c01, lr=0.001, 4 seeds") for label in labels), labels
    seeds_drawn = len(figure.axes[0].lines) - 2  # every seed's line plus one mean line per optimizer
    assert seeds_drawn == len(ADAM_CONFIRM) + len(SGD_CONFIRM)
