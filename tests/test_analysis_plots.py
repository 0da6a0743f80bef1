"""The report's figures: the data behind them (seed means, axis groups) and their text, not pixels."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from optsweep.analysis.binning import N_BINS, axis_groups, nice_log_edges
from optsweep.analysis.plots import learning_curves, lr_wd_heatmap, seed_mean

# Weight decays of the adam panel of a real 16-configuration random search: log-uniform draws,
# 0 for "none", and two draws so close (0.000457, 0.000459) that 1-digit labels collided.
SAMPLED_WD = [
    0.0,
    3.073798738e-06,
    5.949121881e-06,
    5.055674643e-05,
    0.0001691020589,
    0.0003645552479,
    0.0004565805795,
    0.0004592153794,
    0.006199898506,
    0.007620862907,
]
SAMPLED_LR = np.geomspace(1.41e-4, 5.44e-2, 16) * (1 + 0.01 * np.sin(np.arange(16)))
RANGE = re.compile(r"^(?P<low>[^–]+)–(?P<high>[^–]+)$")


# --- learning curves: the mean only where every seed has data ---------------------------------


def wide(columns: dict[str, list[float]]) -> pd.DataFrame:
    """An (epoch x seed) table; shorter lists are seeds stopped early (NaN afterwards)."""
    n = max(len(values) for values in columns.values())
    data = {name: values + [np.nan] * (n - len(values)) for name, values in columns.items()}
    return pd.DataFrame(data, index=pd.Index(range(1, n + 1), name="epoch"))


def test_seed_mean_stops_at_the_last_epoch_every_seed_reached() -> None:
    table = wide({"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [3.0, 4.0, 5.0, 6.0, 7.0], "c": [2.0, 3.0, 4.0]})
    stats = seed_mean(table)
    assert list(stats.index) == [1, 2, 3]  # not epochs 4-5, where only two seeds are left
    assert stats["mean"].tolist() == [2.0, 3.0, 4.0]
    assert stats["low"].tolist() == [1.0, 2.0, 3.0] and stats["high"].tolist() == [3.0, 4.0, 5.0]


def test_seed_mean_leaves_a_gap_rather_than_averaging_fewer_seeds() -> None:
    table = wide({"a": [1.0, 2.0, 3.0, 4.0], "b": [3.0, np.nan, 5.0, 6.0]})
    stats = seed_mean(table)
    assert list(stats.index) == [1, 2, 3, 4]
    assert np.isnan(stats.loc[2]).all() and stats.loc[3, "mean"] == 4.0


@pytest.mark.parametrize(
    "columns",
    [
        {"a": [1.0, 2.0, 3.0], "b": [2.0]},  # only the first epoch is shared: seeds only
        {"a": [1.0, 2.0], "b": [np.nan, np.nan]},  # a seed without data
        {},
    ],
)
def test_seed_mean_is_empty_without_two_shared_epochs(columns: dict[str, list[float]]) -> None:
    table = wide(columns) if columns else pd.DataFrame()
    assert seed_mean(table).empty


def test_seed_mean_of_one_seed_is_that_seed() -> None:
    stats = seed_mean(wide({"a": [0.5, 0.7, 0.8]}))
    assert stats["mean"].tolist() == stats["low"].tolist() == [0.5, 0.7, 0.8]


def curves_and_summary(lengths: list[int], loss_scale: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for seed, n_epochs in enumerate(lengths):
        for epoch in range(1, n_epochs + 1):
            loss = loss_scale * (1.0 + 0.1 * seed) * 0.5**epoch
            rows.append((f"t{seed}", "adam", "adam-c01", seed, "completed", epoch, loss, 0.5 + 0.02 * epoch))
    columns = ["trial_id", "optimizer", "config_id", "seed", "status", "epoch", "train_loss", "val_acc"]
    curves = pd.DataFrame(rows, columns=columns)
    summary = pd.DataFrame(
        [{"optimizer": "adam", "config_id": "adam-c01", "lr": 1e-3, "n_seeds": len(lengths)}]
    )
    return curves, summary


def thick_lines(fig: Figure) -> list:
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_linewidth() > 2]


def test_learning_curves_draw_the_mean_only_over_shared_epochs() -> None:
    fig = learning_curves(*curves_and_summary([12, 12, 5]))
    means = thick_lines(fig)
    assert len(means) == 2  # accuracy and loss
    assert all(max(line.get_xdata()) == 5 for line in means)
    seeds = [line for line in fig.axes[0].get_lines() if line.get_linewidth() < 2]
    assert max(max(line.get_xdata()) for line in seeds) == 12  # the survivors are still drawn
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == ["adam (adam-c01, lr=0.001, 3 seeds; mean to epoch 5)"]


def test_learning_curves_without_shared_epochs_draw_only_seeds() -> None:
    fig = learning_curves(*curves_and_summary([8, 1]))
    assert thick_lines(fig) == []
    assert fig.axes[0].get_legend().get_texts()[0].get_text().endswith("; seeds only)")


@pytest.mark.parametrize("loss_scale", [1.0, 1e-3])
@pytest.mark.parametrize("lengths", [[12, 12], [2, 2]])  # 4 decades of loss, and less than one
def test_log_loss_axis_labels_only_major_ticks(lengths: list[int], loss_scale: float) -> None:
    fig = learning_curves(*curves_and_summary(lengths, loss_scale))
    fig.draw_without_rendering()
    axis = fig.axes[1].yaxis
    low, high = sorted(axis.get_view_interval())
    shown = [t for t in axis.get_major_ticks() if low <= t.get_loc() <= high]
    labels = [t.label1.get_text() for t in shown]
    assert len(labels) >= 2 and all(labels) and len(set(labels)) == len(labels), labels
    assert all(float(label) == pytest.approx(t.get_loc()) for label, t in zip(labels, shown, strict=True))
    assert not any(t.label1.get_text() for t in axis.get_minor_ticks())


# --- axis groups: one kind and style of label per axis, never two alike -----------------------


def assert_consistent(values: np.ndarray, keys: np.ndarray, labels: list[str]) -> None:
    assert len(set(labels)) == len(labels), labels
    assert keys.min() >= 0 and keys.max() < len(labels)
    nonzero = [label for label in labels if label not in ("0", "≤0")]
    ranges = [RANGE.match(label) for label in nonzero]
    assert all(ranges) or not any(ranges), labels  # all ranges or all exact values
    numbers = [
        part for m, label in zip(ranges, nonzero, strict=True) for part in (m.groups() if m else [label])
    ]
    assert len({"e" in number for number in numbers}) <= 1, labels  # all plain or all scientific
    if all(ranges) and ranges:
        assert len(ranges) <= N_BINS
        for value, key in zip(values, keys, strict=True):
            label = labels[key]
            if value <= 0:
                assert label in ("0", "≤0")
            else:
                low, high = map(float, RANGE.match(label).groups())
                assert low <= value <= high, (value, label)
                assert float(f"{low:.0e}") == low and float(f"{high:.0e}") == high  # 1 significant digit
    else:
        for value, key in zip(values, keys, strict=True):
            assert float(labels[key]) == pytest.approx(value, rel=5e-3)  # the value (1 sampled: rounded)


def test_sampled_weight_decays_get_unique_ranges_and_zero_its_own_row() -> None:
    values = np.array(SAMPLED_WD)
    keys, labels = axis_groups(values)
    assert labels[0] == "0" and keys[0] == 0 and (keys[1:] > 0).all()
    assert labels[1:] == [
        "3e-06–1e-05",
        "1e-05–3e-05",
        "3e-05–1e-04",
        "1e-04–3e-04",
        "3e-04–1e-03",
        "1e-03–3e-03",
        "3e-03–1e-02",
    ]
    assert keys[6] == keys[7]  # 0.000457 and 0.000459 share a row instead of two rows "5e-04"
    assert_consistent(values, keys, labels)


def test_a_grid_keeps_its_exact_values() -> None:
    values = np.array([0.0, 2e-4, 2.5e-4, 1e-3, 2.5e-4])
    keys, labels = axis_groups(values)
    assert labels == ["0", "2e-04", "2.5e-04", "1e-03"]  # format_value would say "2e-04" twice
    assert keys.tolist() == [0, 1, 2, 3, 2]
    assert axis_groups(np.array([0.01, 0.1, 1.0]))[1] == ["0.01", "0.1", "1"]


def test_plain_labels_when_every_edge_is_at_least_a_thousandth() -> None:
    labels = axis_groups(np.geomspace(1.26e-3, 0.8, 16))[1]
    assert labels == ["0.001–0.003", "0.003–0.01", "0.01–0.03", "0.03–0.1", "0.1–0.3", "0.3–1"]


@pytest.mark.parametrize(
    ("low", "high", "n_bins"),
    [(1.41e-4, 5.44e-2, 6), (1e-8, 1e2, 5), (0.0061, 0.0069, 1), (3e-5, 3e-5, 1), (1e-3, 1e-2, 3)],
)
def test_nice_log_edges(low: float, high: float, n_bins: int) -> None:
    edges = nice_log_edges(low, high)
    assert len(edges) - 1 == n_bins and edges[0] <= low and high <= edges[-1]


positive_or_zero = st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1e3))


@settings(max_examples=150, deadline=None)
@given(st.lists(positive_or_zero, min_size=1, max_size=40))
def test_axis_groups_are_consistent(values: list[float]) -> None:
    array = np.array(values)
    assert_consistent(array, *axis_groups(array))


# --- the heatmap: unique, consistent row and column labels on a random search ----------------


def sampled_trials() -> pd.DataFrame:
    rows = []
    for i, (lr, wd) in enumerate(zip(SAMPLED_LR, SAMPLED_WD + SAMPLED_WD[:6], strict=True)):
        for seed in range(2):
            rows.append(
                {
                    "trial_id": f"t{i}_{seed}",
                    "optimizer": "adam",
                    "seed": seed,
                    "lr": lr,
                    "weight_decay": wd,
                    "status": "completed",
                    "best_val_acc": 0.5 + 0.02 * i + 0.01 * seed,
                    "test_acc": 0.5,
                    "config_id": f"adam-c{i:02d}",
                }
            )
    return pd.DataFrame(rows)


def test_heatmap_labels_are_unique_and_consistent() -> None:
    trials = sampled_trials()
    fig = lr_wd_heatmap(trials)
    assert fig is not None
    fig.draw_without_rendering()
    ax = fig.axes[0]
    rows = [label.get_text() for label in ax.get_yticklabels()]
    columns = [label.get_text() for label in ax.get_xticklabels()]
    assert rows == axis_groups(trials["weight_decay"].to_numpy())[1]
    assert columns == axis_groups(trials["lr"].to_numpy())[1]
    for values, labels in ((trials["weight_decay"], rows), (trials["lr"], columns)):
        assert_consistent(values.to_numpy(), axis_groups(values.to_numpy())[0], labels)
    assert rows[0] == "0" and len(rows) <= N_BINS + 1 and len(columns) <= N_BINS


def test_heatmap_title_of_one_panel_wraps_instead_of_being_cropped() -> None:
    fig = lr_wd_heatmap(sampled_trials())
    assert fig is not None and len(fig.axes) == 2  # one panel and its colorbar
    lines = fig.get_suptitle().split("\n")
    assert len(lines) > 1 and max(map(len, lines)) <= 12 * fig.get_figwidth()
    assert "div k/n" in fig.get_suptitle()  # not broken between "div" and "k/n"
