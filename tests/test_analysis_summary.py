"""Per-optimizer summary, tuning budget and verdict: known answers from hand-made trial tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import ADAM_BEST, SGD_BEST, standard_experiment
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from optsweep import analysis
from optsweep.analysis.stats import expected_max_curve

STATUSES = ["completed", "stopped_early", "diverged", "error", "incomplete"]


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return analysis.load(standard_experiment(tmp_path_factory.mktemp("summary") / "exp"))


@pytest.fixture(scope="module")
def summary(trials: pd.DataFrame) -> pd.DataFrame:
    return analysis.summarize(trials).set_index("optimizer")


def make_trials(rows: list[tuple[str, str, int, float, str, float]]) -> pd.DataFrame:
    """A trials table from (optimizer, config, seed, lr, status, best_val_acc) tuples."""
    frame = pd.DataFrame(rows, columns=["optimizer", "config_id", "seed", "lr", "status", "best_val_acc"])
    frame.insert(0, "trial_id", [f"t{i:04d}" for i in range(len(frame))])
    frame["test_acc"] = np.where(frame["status"] == "completed", frame["best_val_acc"] - 0.01, np.nan)
    columns = ["trial_id", "optimizer", "seed", "lr", "status", "best_val_acc", "test_acc", "config_id"]
    return frame[columns]


def test_best_configuration_and_its_statistics(summary: pd.DataFrame) -> None:
    adam, sgd = summary.loc["adam"], summary.loc["sgd"]
    assert adam["config_id"] == "adam-c01" and adam["lr"] == 1e-3 and adam["weight_decay"] == 0.0
    assert adam["beta2"] == 0.999 and pd.isna(adam["momentum"])
    assert sgd["config_id"] == "sgd-c01" and sgd["lr"] == 0.1 and sgd["momentum"] == 0.9
    for row, values in ((adam, ADAM_BEST), (sgd, SGD_BEST)):
        assert row["n_seeds"] == 3
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values))
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
        assert row["reported_from"] == "search" and row["search_mean"] == pytest.approx(np.mean(values))
    # The test metric is read at each seed's best validation epoch, with its own interval.
    tests = np.array(ADAM_BEST) - 0.02
    assert adam["test_acc_mean"] == pytest.approx(tests.mean())
    low, high = scipy_stats.t.interval(0.95, 2, loc=tests.mean(), scale=scipy_stats.sem(tests))
    assert (adam["test_acc_ci_low"], adam["test_acc_ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_counts(summary: pd.DataFrame) -> None:
    columns = ["n_configs", "n_trials", "n_completed", "n_stopped_early", "n_diverged", "n_error"]
    columns += ["n_incomplete"]
    assert summary.loc["adam", columns].tolist() == [5, 15, 12, 1, 1, 1, 0]
    assert summary.loc["sgd", columns].tolist() == [4, 12, 7, 0, 3, 0, 2]
    assert (summary["min_seeds"] == 3).all()


def test_diverged_and_under_seeded_configurations_never_win(trials: pd.DataFrame) -> None:
    configs = analysis.configurations(trials).set_index("config_id")
    # adam-c03 has the higher mean over its finished seeds, but one of its seeds diverged.
    assert configs.loc["adam-c03", "mean"] > configs.loc["adam-c01", "mean"]
    assert not configs.loc["adam-c03", "candidate"]
    # adam-c05 lost a seed to an error: two finished seeds against three for everyone else.
    assert configs.loc["adam-c05", "mean"] > configs.loc["adam-c01", "mean"]
    assert configs.loc["adam-c05", "candidate"] and not configs.loc["adam-c05", "eligible"]
    # the half-finished sgd-c04 has one finished seed.
    assert configs.loc["sgd-c04", "n_seeds"] == 1 and not configs.loc["sgd-c04", "eligible"]


def test_stopped_early_seeds_count_with_what_they_reached(trials: pd.DataFrame) -> None:
    configs = analysis.configurations(trials).set_index("config_id")
    assert configs.loc["adam-c04", "n_seeds"] == 3
    assert configs.loc["adam-c04", "mean"] == pytest.approx(np.mean([0.85, 0.93, 0.93]))


def test_tuning_budget_against_a_direct_computation(trials: pd.DataFrame) -> None:
    budget = analysis.tuning_budget(trials)
    # Configuration scores: mean over seeds with results, a diverged seed scoring 0.
    scores = {
        "adam": [0.95, 0.91, (0.0 + 0.97 + 0.98) / 3, (0.85 + 0.93 + 0.93) / 3, (0.99 + 0.98) / 2],
        "sgd": [0.94, 0.88, 0.0, 0.92],
    }
    for optimizer, values in scores.items():
        curve = budget[budget["optimizer"] == optimizer]
        assert curve["k"].tolist() == list(range(1, len(values) + 1))
        assert (curve["n_configs"] == len(values)).all()
        assert curve["score_min"].iloc[0] == pytest.approx(min(values))
        v = np.sort(values)
        n = len(v)
        for k, got in zip(curve["k"], curve["expected_max"], strict=True):
            direct = sum(v[i - 1] * ((i / n) ** k - ((i - 1) / n) ** k) for i in range(1, n + 1))
            assert got == pytest.approx(direct)
        np.testing.assert_allclose(curve["expected_max"], expected_max_curve(values)["expected_max"])


def test_a_half_finished_experiment_lowers_the_seed_threshold_for_everyone() -> None:
    rows = [("adam", "a1", s, 1e-3, "completed", 0.90 + 0.01 * s) for s in range(3)]
    rows += [("adam", "a2", 0, 1e-2, "completed", 0.97), ("adam", "a2", 1, 1e-2, "incomplete", np.nan)]
    rows += [("sgd", "s1", 0, 0.1, "completed", 0.93), ("sgd", "s1", 1, 0.1, "incomplete", np.nan)]
    summary = analysis.summarize(make_trials(rows)).set_index("optimizer")
    assert (summary["min_seeds"] == 1).all()
    assert summary.loc["adam", "config_id"] == "a2" and summary.loc["adam", "n_seeds"] == 1
    assert summary.loc["adam", "ci_low"] == summary.loc["adam", "ci_high"] == 0.97
    assert "single seed" in analysis.verdict(summary.reset_index())


def test_an_optimizer_without_results_gets_an_empty_row() -> None:
    rows = [("adam", "a1", s, 1e-3, "completed", 0.9) for s in range(2)]
    rows += [("lamb", "l1", 0, 1.0, "diverged", np.nan), ("lamb", "l2", 0, 2.0, "error", np.nan)]
    summary = analysis.summarize(make_trials(rows))
    assert summary["optimizer"].tolist() == ["adam", "lamb"]  # best first
    lamb = summary.set_index("optimizer").loc["lamb"]
    assert lamb["n_seeds"] == 0 and np.isnan(lamb["mean"]) and pd.isna(lamb["config_id"])
    assert lamb["n_diverged"] == 1 and lamb["n_error"] == 1
    assert "lamb has no finished, non-diverged configuration" in analysis.verdict(summary)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["adam", "sgd"]),
            st.integers(0, 4),  # configuration
            st.integers(0, 2),  # seed
            st.sampled_from(STATUSES),
            st.floats(0.0, 1.0),
        ),
        min_size=1,
        max_size=40,
        unique_by=lambda t: (t[0], t[1], t[2]),
    )
)
def test_best_is_never_diverged_and_is_the_top_eligible_mean(draws: list[tuple]) -> None:
    rows = [(o, f"{o}-{c}", s, 10.0**-c, status, acc) for o, c, s, status, acc in draws]
    trials = make_trials(rows)
    summary = analysis.summarize(trials)
    for row in summary.itertuples(index=False):
        if pd.isna(row.config_id):
            continue
        seeds = trials[trials["config_id"] == row.config_id]
        assert "diverged" not in set(seeds["status"])
        finished = seeds[seeds["status"].isin(["completed", "stopped_early"])]
        assert row.n_seeds == len(finished) >= row.min_seeds
        assert row.mean == pytest.approx(finished["best_val_acc"].mean())
        assert row.ci_low <= row.mean + 1e-12 and row.mean <= row.ci_high + 1e-12
        configs = analysis.configurations(trials)
        rivals = configs[(configs["optimizer"] == row.optimizer) & configs["eligible"]]
        assert row.mean == pytest.approx(rivals["mean"].max())


def _summary(*rows: tuple[str, int, float, float, float, float]) -> pd.DataFrame:
    columns = ["optimizer", "n_seeds", "mean", "std", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def test_verdict_no_significant_difference(summary: pd.DataFrame) -> None:
    text = analysis.verdict(summary.reset_index())
    assert text.startswith("adam (0.950 ± 0.010, 95% CI [")
    assert "sgd (0.940 ± 0.010" in text and "show no significant difference" in text
    # Welch's t-test of 0.95 vs 0.94, std 0.01 each, 3 seeds a side.
    p = scipy_stats.ttest_ind(ADAM_BEST, SGD_BEST, equal_var=False).pvalue
    assert text.endswith(f"(difference 0.010, 95% CI [-0.013, 0.033], Welch's t-test p = {p:.3f}).")


def test_verdict_beats() -> None:
    summary = _summary(("sgd", 3, 0.90, 0.01, 0.89, 0.91), ("adam", 3, 0.95, 0.004, 0.947, 0.953))
    text = analysis.verdict(summary)
    assert text.startswith("adam beats sgd: adam (0.950 ± 0.004, 95% CI [0.947, 0.953], 3 seeds)")
    test = scipy_stats.ttest_ind_from_stats(0.95, 0.004, 3, 0.90, 0.01, 3, equal_var=False)
    assert text.endswith(f"Welch's t-test p = {test.pvalue:.3f}).") and "(difference 0.050, 95% CI [" in text
    assert "conservative" not in text and "overlap" not in text
    table = analysis.compare(summary)
    assert table[["first", "second", "conclusion"]].values.tolist() == [["adam", "sgd", "beats"]]
    assert table["p_value"].iloc[0] == pytest.approx(test.pvalue) == table["p_holm"].iloc[0]
    assert table["ci_low"].iloc[0] < 0.05 < table["ci_high"].iloc[0]


def test_verdict_with_three_optimizers() -> None:
    summary = _summary(
        ("adam", 5, 0.95, 0.004, 0.947, 0.953),
        ("adamw", 5, 0.949, 0.004, 0.946, 0.952),
        ("sgd", 5, 0.90, 0.01, 0.89, 0.91),
        ("lars", 1, 0.80, np.nan, 0.80, 0.80),
    )
    text = analysis.verdict(summary)
    assert text.startswith("adam (0.950 ± 0.004, 95% CI [0.947, 0.953], 5 seeds) has the highest mean")
    assert "it beats sgd (" in text
    assert "no significant difference from adamw (" in text
    assert "cannot be told apart from lars (0.800, 1 seed)" in text
    assert len(analysis.compare(summary)) == 6


def test_verdict_without_results() -> None:
    empty = _summary(("adam", 0, np.nan, np.nan, np.nan, np.nan))
    assert analysis.verdict(empty).startswith("No optimizer has a finished")
    one = _summary(("adam", 2, 0.9, 0.01, 0.89, 0.91))
    assert "nothing to compare" in analysis.verdict(one)


def test_caveats_name_what_went_wrong(trials: pd.DataFrame) -> None:
    notes = " ".join(analysis.caveats(trials, analysis.summarize(trials)))
    assert "With 3 seeds a side a true difference must be about 3.5 seed standard deviations" in notes
    assert "selection-biased (the winner's curse)" in notes
    assert "conservative" not in notes
    assert "1 trial(s) were stopped early" in notes
    assert "4 trial(s) diverged (adam: 1, sgd: 3)" in notes
    assert "CUDA out of memory (fake)" in notes
    assert "unfinished: 2 trial(s)" in notes
    assert "different tuning budgets (adam: 5, sgd: 4 configurations)" in notes
    assert "at least 3 finished seeds" in notes and "2 configuration(s) with fewer were set aside" in notes


def test_summary_does_not_depend_on_the_experiment_path(tmp_path: Path, trials: pd.DataFrame) -> None:
    again = analysis.load(standard_experiment(tmp_path / "elsewhere"))
    columns = ["optimizer", "config_id", "mean", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(analysis.summarize(again)[columns], analysis.summarize(trials)[columns])
