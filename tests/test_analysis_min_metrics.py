"""Experiments whose target is a min metric (perplexity, MSE): the best configuration, the verdict,
the tuning budget, the caveats, every figure and the report all follow the metric and its direction.

The fixtures map every value of the standard (accuracy) experiment by a decreasing affine function,
so the right answers are the standard ones, mirrored.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import (
    ACC,
    ADAM,
    ADAM_BEST,
    MSE,
    PERPLEXITY,
    SGD_BEST,
    FakeTrial,
    Kind,
    standard_experiment,
    write_experiment,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread

from optsweep import analysis
from optsweep.analysis import plots
from optsweep.analysis.binning import axis_groups
from optsweep.analysis.summary import diverged_score
from optsweep.vocabulary import DIVERGED, FINISHED, STATUSES, Target

PPL = PERPLEXITY.target
M = PERPLEXITY.mirror


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("min")
    kinds = {"acc": ACC, "perplexity": PERPLEXITY, "mse": MSE}
    return {name: standard_experiment(root / name, kind=kind) for name, kind in kinds.items()}


@pytest.fixture(scope="module")
def ppl_trials(experiments: dict[str, Path]) -> pd.DataFrame:
    return analysis.load(experiments["perplexity"])


@pytest.fixture(scope="module")
def ppl_summary(ppl_trials: pd.DataFrame) -> pd.DataFrame:
    return analysis.summarize(ppl_trials)


# --- the best configuration and its statistics, mirrored ---------------------------------------


@pytest.mark.parametrize("kind", [PERPLEXITY, MSE], ids=["perplexity", "mse"])
def test_summary_is_the_accuracy_summary_mirrored(experiments: dict[str, Path], kind: Kind) -> None:
    acc = analysis.summarize(analysis.load(experiments["acc"])).set_index("optimizer")
    summary = analysis.summarize(analysis.load(experiments[kind.target.metric]))
    assert summary.attrs["target"] == kind.target
    assert summary["optimizer"].tolist() == ["adam", "sgd"]  # best (lowest) first
    mirrored = summary.set_index("optimizer")
    scale = kind.mirror(0.0) - kind.mirror(1.0)
    for optimizer, values in (("adam", ADAM_BEST), ("sgd", SGD_BEST)):
        row, ref = mirrored.loc[optimizer], acc.loc[optimizer]
        assert row["config_id"] == ref["config_id"] and row["n_seeds"] == 3
        assert row["mean"] == pytest.approx(np.mean([kind.mirror(q) for q in values]))
        assert row["std"] == pytest.approx(scale * ref["std"])
        # A decreasing map turns the interval's upper end into the lower one.
        assert row["ci_low"] == pytest.approx(kind.mirror(ref["ci_high"]))
        assert row["ci_high"] == pytest.approx(kind.mirror(ref["ci_low"]))
        test_mean = analysis.test_mean_column(kind.target)
        assert row[test_mean] == pytest.approx(kind.mirror(ref["test_acc_mean"]), rel=1e-5)
    assert "test_acc_mean" not in summary.columns or kind.target.metric == "acc"


def test_lower_is_better_picks_and_excludes_the_same_configurations(ppl_trials: pd.DataFrame) -> None:
    configs = analysis.configurations(ppl_trials).set_index("config_id")
    # adam-c03 has the lower (better) mean over its finished seeds, but one of its seeds diverged.
    assert configs.loc["adam-c03", "mean"] < configs.loc["adam-c01", "mean"]
    assert not configs.loc["adam-c03", "candidate"]
    # adam-c05 is better still, but lost a seed to an error.
    assert configs.loc["adam-c05", "mean"] < configs.loc["adam-c01", "mean"]
    assert configs.loc["adam-c05", "candidate"] and not configs.loc["adam-c05", "eligible"]
    # The worst eligible configuration is never chosen (as a max-mode mistake would).
    assert configs.loc["adam-c04", "mean"] > configs.loc["adam-c01", "mean"]


def _table(rows: list[tuple[str, str, int, float, str, float]], target: Target) -> pd.DataFrame:
    """A trials table from (optimizer, config, seed, lr, status, best value) tuples."""
    columns = ["optimizer", "config_id", "seed", "lr", "status", target.best_key]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "trial_id", [f"t{i:04d}" for i in range(len(frame))])
    frame[target.test_key] = frame[target.best_key] * 1.01
    order = ["trial_id", "optimizer", "seed", "lr", "status", target.best_key, target.test_key, "config_id"]
    return frame[order]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["adam", "sgd"]),
            st.integers(0, 4),  # configuration
            st.integers(0, 2),  # seed
            st.sampled_from(STATUSES),
            st.floats(1e-4, 10.0),
        ),
        min_size=1,
        max_size=40,
        unique_by=lambda t: (t[0], t[1], t[2]),
    )
)
def test_min_best_is_never_diverged_and_is_the_lowest_eligible_mean(draws: list[tuple]) -> None:
    target = Target("mse", "min")
    trials = _table([(o, f"{o}-{c}", s, 10.0**-c, status, y) for o, c, s, status, y in draws], target)
    summary = analysis.summarize(trials, target=target)
    configs = analysis.configurations(trials, target=target)
    for row in summary.itertuples(index=False):
        if pd.isna(row.config_id):
            continue
        seeds = trials[trials["config_id"] == row.config_id]
        assert DIVERGED not in set(seeds["status"])
        finished = seeds[seeds["status"].isin(FINISHED)]
        assert row.mean == pytest.approx(finished[target.best_key].mean())
        rivals = configs[(configs["optimizer"] == row.optimizer) & configs["eligible"]]
        assert row.mean == pytest.approx(rivals["mean"].min())
    means = summary["mean"].dropna().tolist()
    assert means == sorted(means)  # best (lowest) first


# --- tuning budget: the expected minimum, against brute force ----------------------------------


def _brute_force_expected_min(scores: list[float], k: int) -> float:
    tuples = list(itertools.product(scores, repeat=k))
    return sum(min(t) for t in tuples) / len(tuples)


def test_tuning_budget_is_the_expected_minimum(ppl_trials: pd.DataFrame) -> None:
    budget = analysis.tuning_budget(ppl_trials)
    assert "expected_min" in budget.columns and "expected_max" not in budget.columns
    # A diverged seed scores the worst finished seed's value: adam's stopped run, best 0.85.
    worst = M(0.85)
    assert diverged_score(PPL, ppl_trials) == pytest.approx(worst)
    scores = {
        "adam": [M(0.95), M(0.91), (worst + M(0.97) + M(0.98)) / 3, (M(0.85) + 2 * M(0.93)) / 3],
        "sgd": [M(0.94), M(0.88), worst, M(0.92)],
    }
    scores["adam"].append((M(0.99) + M(0.98)) / 2)
    for optimizer, values in scores.items():
        curve = budget[budget["optimizer"] == optimizer].reset_index(drop=True)
        assert curve["k"].tolist() == list(range(1, len(values) + 1))
        assert (curve["n_configs"] == len(values)).all()
        for k in range(1, 5):
            expected = _brute_force_expected_min(values, k)
            assert curve.loc[k - 1, "expected_min"] == pytest.approx(expected, rel=1e-9)
        assert curve["expected_min"].is_monotonic_decreasing  # more configurations never hurt
        assert curve["score_min"].iloc[0] == pytest.approx(min(values))


@pytest.mark.parametrize("scores", [[0.5], [0.9, 0.1], [0.3, 0.3, 0.9, 0.6], [2.0, 8.0, 8.1, 7.9, 5.0]])
def test_expected_min_curve_matches_brute_force(scores: list[float]) -> None:
    curve = analysis.expected_best_curve(scores, "min", k_max=4)
    for k in range(1, 5):
        assert curve.loc[k - 1, "expected_min"] == pytest.approx(_brute_force_expected_min(scores, k))
        minima = np.array([min(t) for t in itertools.product(scores, repeat=k)])
        assert curve.loc[k - 1, "std"] == pytest.approx(minima.std(), abs=1e-9)
    as_max = analysis.expected_best_curve(scores, "max", k_max=4)
    pd.testing.assert_frame_equal(as_max, analysis.expected_max_curve(scores, k_max=4))
    with pytest.raises(ValueError, match="invalid mode 'minimum'"):
        analysis.expected_best_curve(scores, "minimum")


def test_diverged_seeds_score_the_worst_value_in_either_direction() -> None:
    rows = [("a", "a1", 0, 0.1, "completed", 0.2), ("a", "a1", 1, 0.1, "diverged", np.nan)]
    rows += [("a", "a2", 0, 0.3, "completed", 0.6)]
    mse = Target("mse", "min")
    assert diverged_score(mse, _table(rows, mse)) == 0.6  # no better than the worst finished seed
    acc = Target("acc", "max")
    assert diverged_score(acc, _table(rows, acc)) == 0.0  # accuracy keeps its 0
    negative = [(o, c, s, lr, status, -y if y == y else y) for o, c, s, lr, status, y in rows]
    r2 = Target("r2", "max")
    assert diverged_score(r2, _table(negative, r2)) == -0.6  # a max metric below 0: its worst seed


# --- verdict ------------------------------------------------------------------------------------


def _summary(*rows: tuple[str, int, float, float, float, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["optimizer", "n_seeds", "mean", "std", "ci_low", "ci_high"])


def test_for_a_min_metric_the_lower_interval_wins() -> None:
    summary = _summary(("adam", 5, 30.0, 1.0, 29.0, 31.0), ("sgd", 5, 20.0, 1.0, 19.0, 21.0))
    text = analysis.verdict(summary, target=PPL)
    assert text.startswith("sgd beats adam: sgd (20.0 ± 1.0, 95% CI [19.0, 21.0], 5 seeds) vs adam (30.0")
    assert analysis.verdict(summary).startswith("adam beats sgd")  # the same numbers as accuracies
    table = analysis.compare(summary, target=PPL)
    assert table[["first", "second", "conclusion"]].values.tolist() == [["sgd", "adam", "beats"]]
    assert table["difference"].iloc[0] == pytest.approx(-10.0)
    three = pd.concat([summary, _summary(("lamb", 5, 20.5, 1.0, 19.5, 21.5))], ignore_index=True)
    text = analysis.verdict(three, target=PPL)
    assert text.startswith("sgd (20.0 ± 1.0, 95% CI [19.0, 21.0], 5 seeds) has the lowest mean")
    assert "it beats adam (" in text and "no significant difference from lamb (" in text


def test_verdict_of_a_min_experiment_in_its_own_digits(experiments: dict[str, Path]) -> None:
    text = analysis.verdict(analysis.summarize(analysis.load(experiments["mse"])))
    assert text.startswith("adam (0.00250 ± 0.00050, 95% CI [")  # mse 0.05 * (1 - 0.95)
    assert "show no significant difference" in text


def test_caveats_speak_of_the_metric(ppl_trials: pd.DataFrame, ppl_summary: pd.DataFrame) -> None:
    notes = " ".join(analysis.caveats(ppl_trials, ppl_summary))
    assert "chosen by its mean validation perplexity over the search seeds" in notes
    assert "test perplexity, read at the epoch the validation chose, is less biased" in notes
    assert "count with the perplexity they had reached" in notes
    assert f"a diverged run scores {M(0.85):.2f}, the worst value any finished seed reached" in notes
    assert "accuracy" not in notes


# --- figures: the metric's name and direction, and "better" where it belongs ------------------


def test_lr_sensitivity_of_a_min_metric(ppl_trials: pd.DataFrame, ppl_summary: pd.DataFrame) -> None:
    fig = plots.lr_sensitivity(ppl_trials, ppl_summary)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "best validation perplexity (lower is better)"
    # Diverged crosses sit on a strip at the top, the worse end of a min metric.
    strips = [c for c in ax.collections if len(c.get_offsets()) and (c.get_offsets()[:, 1] == 0.97).all()]
    assert sum(len(c.get_offsets()) for c in strips) == int((ppl_trials["status"] == DIVERGED).sum())
    plotted = ppl_trials.loc[ppl_trials["status"].isin(FINISHED), "best_val_perplexity"]
    assert (
        plotted.max() < ax.get_ylim()[1]
        and ax.transData.transform((1e-3, plotted.max()))[1] < (ax.transAxes.transform((0, 0.94))[1])
    )  # the worst point stays below the strip
    # adam's line takes the lowest eligible mean at lr=1e-3 (adam-c01, not adam-c04).
    adam = next(line for line in ax.get_lines() if line.get_label() == "adam")
    at = dict(zip(adam.get_xdata(), adam.get_ydata(), strict=True))
    assert at[1e-3] == pytest.approx(np.mean([M(q) for q in ADAM_BEST]))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "diverged (top strip)" in legend


def test_a_min_metric_spanning_decades_is_drawn_on_log_axes(tmp_path: Path) -> None:
    """Perplexities from 4 to 200: on a linear axis the good configurations would sit in a sliver."""
    finals = {1e-4: 200.0, 1e-3: 20.0, 1e-2: 4.0, 1e-1: 60.0}
    trials = [
        FakeTrial("adam", seed, {**ADAM, "lr": lr}, [v * 20 + seed, v * 5 + seed, v + seed], max_epochs=3)
        for lr, v in finals.items()
        for seed in range(2)
    ]
    trials.append(FakeTrial("adam", 0, {**ADAM, "lr": 1.0}, [900.0], diverged=True, max_epochs=3))
    root = write_experiment(tmp_path / "exp", trials, kind=PERPLEXITY)
    table = analysis.load(root)
    summary = analysis.summarize(table)
    ax = plots.lr_sensitivity(table, summary).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel().endswith("(lower is better) (log scale)")
    low, high = ax.get_ylim()
    assert low < 4.0 and high > 201.0
    worst = ax.transAxes.inverted().transform(ax.transData.transform((1e-4, 201.0)))[1]
    assert worst < 0.94  # below the diverged strip at the top
    labels = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
    assert "10" in labels and "100" in labels
    curves_ax = plots.learning_curves(analysis.curves(root), summary).axes[0]
    assert curves_ax.get_yscale() == "log"  # the chosen configuration falls from 80 to 4
    narrow = [FakeTrial("adam", s, ADAM, [3.0, 2.5, 2.0 + s], max_epochs=3) for s in range(2)]
    narrow_table = analysis.load(write_experiment(tmp_path / "narrow", narrow, kind=PERPLEXITY))
    assert plots.lr_sensitivity(narrow_table).axes[0].get_yscale() == "linear"
    acc = analysis.load(
        write_experiment(tmp_path / "acc", [FakeTrial("sgd", 0, ADAM, [0.01, 0.5], max_epochs=2)])
    )
    assert plots.lr_sensitivity(acc).axes[0].get_yscale() == "linear"  # max metrics never


def test_learning_curves_of_a_min_metric(experiments: dict[str, Path], ppl_summary: pd.DataFrame) -> None:
    curves = analysis.curves(experiments["perplexity"])
    fig = plots.learning_curves(curves, ppl_summary)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "validation perplexity (lower is better)"
    mean = next(line for line in ax.get_lines() if line.get_linewidth() > 2)
    best = curves[curves["config_id"] == ppl_summary["config_id"].iloc[0]]
    expected = best.groupby("epoch")["val_perplexity"].mean()
    np.testing.assert_allclose(mean.get_ydata(), expected.to_numpy())
    assert ax.get_legend()._loc == 1  # upper right: the curves fall


def test_tuning_budget_plot_of_a_min_metric(ppl_trials: pd.DataFrame) -> None:
    budget = analysis.tuning_budget(ppl_trials)
    fig = plots.tuning_budget(budget)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "expected best validation perplexity (lower is better)"
    adam = next(line for line in ax.get_lines() if line.get_label().startswith("adam"))
    np.testing.assert_allclose(adam.get_ydata(), budget.loc[budget["optimizer"] == "adam", "expected_min"])


def test_heatmap_of_a_min_metric(ppl_trials: pd.DataFrame) -> None:
    fig = plots.lr_wd_heatmap(ppl_trials)
    assert fig is not None
    ax, colorbar = fig.axes
    assert colorbar.get_ylabel() == "best configuration mean val perplexity (lower is better)"
    image = ax.get_images()[0]
    assert image.get_cmap().name == "viridis_r"  # low (better) values bright, as high accuracies are
    low, high = colorbar.get_ylim()
    assert low > high  # better (lower) at the top of the colour bar
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    # Columns lr 0.001, 0.01, 0.1; rows weight decay 0, 1e-4.
    assert texts[(0, 0)] == f"{np.mean([M(q) for q in ADAM_BEST]):.2f}"
    assert texts[(1, 1)] == f"{(M(0.99) + M(0.98)) / 2:.2f}*"  # two seeds: too few to be chosen
    assert texts[(2, 0)] == "div\n1/3"


def test_heatmap_cells_keep_their_lowest_configuration() -> None:
    target = Target("mse", "min")
    lrs = np.geomspace(1.41e-4, 5.44e-2, 16) * (1 + 0.01 * np.sin(np.arange(16)))
    wds = [0.0, 3.1e-6, 5.9e-6, 5.1e-5, 1.7e-4, 3.6e-4, 4.6e-4, 4.6e-4, 6.2e-3, 7.6e-3] * 2
    rows = []
    for i, (lr, wd) in enumerate(zip(lrs, wds, strict=False)):
        for seed in range(2):
            value = 0.01 * ((i * 7) % 16 + 1) + 0.001 * seed
            rows.append(("adam", f"adam-c{i:02d}", seed, lr, "completed", value, wd))
    trials = _table([r[:6] for r in rows], target)
    trials.insert(4, "weight_decay", [r[6] for r in rows])
    fig = plots.lr_wd_heatmap(trials, target=target)
    assert fig is not None
    configs = trials.groupby("config_id").agg(lr=("lr", "first"), wd=("weight_decay", "first"))
    configs["mean"] = trials.groupby("config_id")[target.best_key].mean()
    columns, _ = axis_groups(configs["lr"].to_numpy())
    rows_, _ = axis_groups(configs["wd"].to_numpy())
    expected = configs.groupby([columns, rows_])["mean"].min()
    assert (expected.index.to_frame().duplicated().sum() == 0) and len(expected) < len(configs)
    shown = {
        (round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in fig.axes[0].texts
    }
    assert shown == {cell: f"{value:.3f}" for cell, value in expected.items()}  # 3 digits: values < 1


# --- the report ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ppl_report(experiments: dict[str, Path]) -> Path:
    return analysis.write_report(experiments["perplexity"])


def test_report_of_a_min_metric(ppl_report: Path) -> None:
    names = {p.name for p in ppl_report.iterdir()}
    assert {"report.md", "summary.csv", "trials.csv", "tuning_budget.csv"} <= names
    assert {"lr_sensitivity.png", "learning_curves.png", "tuning_budget.png", "lr_wd_heatmap.png"} <= names
    text = (ppl_report / "report.md").read_text()
    assert "- Target metric: validation perplexity (lower is better)" in text
    headers = "| val perplexity (mean ± std) | 95% CI | test perplexity (mean) | test perplexity 95% CI |"
    assert headers in text
    assert "| adam | adam-c01 | lr=0.001" in text and "| 2.00 ± 0.20 |" in text
    assert "show no significant difference (difference -0.20, 95% CI [-0.65, 0.25], Welch" in text
    assert "Expected best validation perplexity after trying k of the search's configurations" in text
    assert "a curve that falls quickly" in text
    assert "lowest mean best-validation-perplexity over finished search seeds" in text
    assert "the curve is the expected minimum of k scores" in text
    assert "crosses at the top: diverged trials" in text
    assert "accuracy" not in text.replace("test acc", "").lower()
    summary = pd.read_csv(ppl_report / "summary.csv")
    assert "test_perplexity_mean" in summary.columns and "test_acc_mean" not in summary.columns
    assert summary["optimizer"].tolist() == ["adam", "sgd"]
    budget = pd.read_csv(ppl_report / "tuning_budget.csv")
    assert "expected_min" in budget.columns
    trials = pd.read_csv(ppl_report / "trials.csv")
    assert {"best_val_perplexity", "final_val_perplexity", "test_perplexity", "test_acc"} <= set(
        trials.columns
    )


def test_min_report_figures_are_real_images(ppl_report: Path) -> None:
    for png in ppl_report.glob("*.png"):
        image = imread(png)
        assert np.ptp(image[..., :3]) > 0.5, f"{png.name} looks blank"
