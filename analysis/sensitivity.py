"""The DeepOBS protocol's analysis (Schneider, Balles & Hennig, ICLR 2019): learning-rate sensitivity
curves, the width of each optimizer's good-lr range, and the final results over fresh seeds.

    points = sensitivity.points(trials)                    # every trial at its lr, diverged ones marked
    widths = sensitivity.widths(trials)                    # the good-lr range of each optimizer
    final = sensitivity.final_results(trials, curves)      # median, quartiles, mean +- std, t-interval
    sensitivity.write_section("results/lr_sensitivity")    # report/lr_sensitivity.md and its figures

Reads only the tables of `optsweep.analysis.load` / `curves` (no Ray, no torch). The target metric and its
direction come from the tables (`analysis.target`).

The width of the good-lr range (`good_range`): on the search stage's curve (the target's value per
learning rate: the median over that lr's search seeds, a diverged or failed seed counting as the worst
possible value), the contiguous run of grid points around the best one whose value is good enough, as
log10(highest lr / lowest lr) in decades (0 when only the best point is good). Good enough, two rules:

- ``within 5% of best``: at most `tolerance` (5%) of the best value worse than it (for accuracy 0.97:
  >= 0.9215);
- ``within confirmation spread``: at most 2 standard deviations of the confirmation seeds (the chosen
  lr retrained on fresh seeds) worse than the best point: within what reruns of one lr scatter by.

A point whose value is missing (diverged, error) is never good and ends the run. The width depends on the
grid's spacing (36 points over 7 decades: 0.2 decades apart); with several search seeds each seed's own
curve gets a width too, whose spread says how much one seed per point can be trusted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from optsweep.analysis import atomic, metric_text
from optsweep.analysis.loading import read_experiment
from optsweep.analysis.markdown import markdown_table
from optsweep.analysis.plots import optimizer_colors
from optsweep.analysis.stats import t_interval
from optsweep.analysis.summary import chosen_configurations, stage_rows
from optsweep.analysis.target import resolve
from optsweep.analysis.tune_files import REPORT_DIR_NAME
from optsweep.vocabulary import CONFIRM, DIVERGED, EPOCH, ERROR, FINISHED, SEARCH, STAGE_COLUMN, Target

TOLERANCE = 0.05
"""Rule ``within 5% of best``: a value at most this fraction of the best value worse than it is good."""
SPREAD_STDS = 2.0
"""Rule ``within confirmation spread``: at most this many confirmation-seed stds worse than the best."""
METRICS = ("final", "best")
"""Which value of a trial the curves show: at its last epoch (DeepOBS's choice) or its best epoch."""
RELATIVE_RULE = "within 5% of best"
SPREAD_RULE = "within confirmation spread"
SECTION_FILE = "lr_sensitivity.md"
CURVES_FIGURE = "lr_sensitivity_curves.png"
FINAL_FIGURE = "lr_sensitivity_final.png"


@dataclass(frozen=True)
class GoodRange:
    """The good-lr range of one sensitivity curve (see the module docstring); NaN where the curve has no
    finite value."""

    best_lr: float
    best_value: float
    threshold: float
    low_lr: float
    high_lr: float
    good_points: int

    @property
    def width_decades(self) -> float:
        """log10(high_lr / low_lr): 0 when only the best point is good."""
        if not (self.low_lr > 0 and self.high_lr > 0):
            return math.nan
        return math.log10(self.high_lr) - math.log10(self.low_lr)


def threshold_of(
    best: float, mode: str, *, tolerance: float = TOLERANCE, margin: float | None = None
) -> float:
    """The worst value still good next to `best` in direction `mode`: `margin` (an absolute amount, e.g.
    2 stds of the confirmation seeds) worse than it when given, else `tolerance` (a fraction of |best|)."""
    if margin is not None:
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"invalid margin {margin!r}: it must be a finite number >= 0")
    elif not 0 <= tolerance < 1:
        raise ValueError(f"invalid tolerance {tolerance!r}: it must be a fraction in [0, 1)")
    else:
        margin = tolerance * abs(best)
    return best - margin if mode == "max" else best + margin


def good_range(
    lrs: np.ndarray | list[float],
    values: np.ndarray | list[float],
    *,
    mode: str = "max",
    tolerance: float = TOLERANCE,
    margin: float | None = None,
) -> GoodRange:
    """The contiguous run of points around the best of the curve (`lrs`, `values`; any order) whose values
    are no worse than `threshold_of` the best (within `tolerance` of it, or `margin` when given). NaN
    values (diverged or failed points) are never good and break the run."""
    if mode not in ("max", "min"):
        raise ValueError(f"invalid mode {mode!r}; allowed: max, min")
    lr = np.asarray(lrs, dtype=float)
    value = np.asarray(values, dtype=float)
    if lr.shape != value.shape or lr.ndim != 1:
        raise ValueError(f"lrs and values must be 1-d and of one length, got {lr.shape} and {value.shape}")
    order = np.argsort(lr, kind="stable")
    lr, value = lr[order], value[order]
    finite = np.isfinite(value)
    if not finite.any():
        return GoodRange(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    sign = 1.0 if mode == "max" else -1.0
    best = int(np.flatnonzero(finite)[np.argmax(sign * value[finite])])
    limit = threshold_of(float(value[best]), mode, tolerance=tolerance, margin=margin)
    good = finite & (sign * value >= sign * limit)
    low = high = best
    while low > 0 and good[low - 1]:
        low -= 1
    while high < len(lr) - 1 and good[high + 1]:
        high += 1
    return GoodRange(
        float(lr[best]), float(value[best]), limit, float(lr[low]), float(lr[high]), high - low + 1
    )


WIDTH_COLUMNS = [
    "optimizer",
    "rule",
    "best_lr",
    "best_value",
    "threshold",
    "low_lr",
    "high_lr",
    "good_points",
    "width_decades",
    "grid_points",
    "diverged_points",
    "seed_width_min",
    "seed_width_max",
    "n_seed_curves",
]


def _value_column(target: Target, metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"invalid metric {metric!r}; allowed: {', '.join(METRICS)}")
    return target.final_key if metric == "final" else target.best_key


def points(trials: pd.DataFrame, *, metric: str = "final", target: Target | None = None) -> pd.DataFrame:
    """Every trial with a learning rate, both stages: optimizer, stage, seed, lr, status, value (the
    target's `metric` value: final or best validation; NaN unless the trial finished) and ``marked`` (the
    status when the trial diverged or failed, else empty): what the sensitivity figure draws."""
    target = resolve(trials, target)
    column = _value_column(target, metric)
    table = trials[trials["lr"].notna()].copy()
    stage = table[STAGE_COLUMN].fillna(SEARCH) if STAGE_COLUMN in table else pd.Series(SEARCH, table.index)
    finished = table["status"].isin(FINISHED)
    frame = pd.DataFrame(
        {
            "optimizer": table["optimizer"],
            "stage": stage,
            "seed": table["seed"],
            "lr": table["lr"].astype(float),
            "status": table["status"],
            "value": table[column].where(finished).astype(float),
            "marked": table["status"].where(table["status"].isin([DIVERGED, ERROR]), ""),
        }
    )
    return frame.sort_values(["optimizer", "stage", "lr", "seed"]).reset_index(drop=True)


def search_curve(
    trials: pd.DataFrame, *, metric: str = "final", target: Target | None = None, seed: int | None = None
) -> pd.DataFrame:
    """The search stage's curve of each optimizer: optimizer, lr, value (the median over the lr's
    search seeds, or the one `seed`'s value; a diverged or failed seed counts as the worst possible
    value, and a median that lands on it is NaN), n_seeds, n_diverged."""
    target = resolve(trials, target)
    table = points(trials, metric=metric, target=target)
    table = table[table["stage"] == SEARCH]
    if seed is not None:
        table = table[table["seed"] == seed]
    worst = -math.inf if target.mode == "max" else math.inf
    rows = []
    for (optimizer, lr), group in table.groupby(["optimizer", "lr"], sort=True):
        counted = group[group["status"].isin([*FINISHED, DIVERGED, ERROR])]
        values = counted["value"].fillna(worst).to_numpy(dtype=float)
        median = float(np.median(values)) if len(values) else math.nan
        rows.append(
            {
                "optimizer": optimizer,
                "lr": float(lr),
                "value": median if math.isfinite(median) else math.nan,
                "n_seeds": len(counted),
                "n_diverged": int((counted["status"] == DIVERGED).sum()),
            }
        )
    return pd.DataFrame(rows, columns=["optimizer", "lr", "value", "n_seeds", "n_diverged"])


def _confirmation(trials: pd.DataFrame) -> pd.DataFrame:
    return stage_rows(trials, CONFIRM)


def chosen_lrs(trials: pd.DataFrame, *, target: Target | None = None) -> pd.Series:
    """The learning rate each optimizer's confirmation retrained (its confirmation trials' lr), or, without
    a confirmation stage, the one the search chose (`analysis.chosen_configurations`), by optimizer."""
    target = resolve(trials, target)
    confirm = _confirmation(trials)
    chosen = confirm.groupby("optimizer")["lr"].first() if not confirm.empty else pd.Series(dtype=float)
    if set(trials["optimizer"].dropna()) <= set(chosen.index):
        return chosen.astype(float).sort_index()
    search = chosen_configurations(trials, target=target)
    for _, row in search.iterrows():
        if row["optimizer"] not in chosen.index:
            chosen[row["optimizer"]] = row["hyperparameters"].get("lr", math.nan)
    return chosen.astype(float).sort_index()


def widths(
    trials: pd.DataFrame,
    *,
    metric: str = "final",
    tolerance: float = TOLERANCE,
    target: Target | None = None,
) -> pd.DataFrame:
    """One row per (optimizer, rule): the good-lr range of the search curve (`search_curve`) by the rule
    (see the module docstring): best_lr, best_value, threshold, low_lr, high_lr, good_points,
    width_decades, grid_points, diverged_points (grid points where the median seed diverged), and with
    several search seeds the spread of the per-seed widths (seed_width_min, seed_width_max, n_seed_curves;
    NaN / 1 with one seed). The spread rule needs 2 finished confirmation seeds (no row without them)."""
    target = resolve(trials, target)
    curve = search_curve(trials, metric=metric, target=target)
    confirm = _confirmation(trials)
    column = _value_column(target, metric)
    seeds = sorted(stage_rows(trials, SEARCH)["seed"].dropna().unique())
    seed_curves: dict[str, list[pd.DataFrame]] = {}
    if len(seeds) > 1:
        for seed in seeds:
            of_seed = search_curve(trials, metric=metric, target=target, seed=seed)
            for optimizer, mine in of_seed.groupby("optimizer"):
                seed_curves.setdefault(optimizer, []).append(mine)
    rows = []
    for optimizer, mine in curve.groupby("optimizer", sort=True):
        finished = confirm[(confirm["optimizer"] == optimizer) & confirm["status"].isin(FINISHED)][column]
        spread = (
            float(finished.dropna().astype(float).std(ddof=1)) if finished.notna().sum() >= 2 else math.nan
        )
        for rule, margin in ((RELATIVE_RULE, None), (SPREAD_RULE, SPREAD_STDS * spread)):
            if margin is not None and math.isnan(margin):
                continue
            found = good_range(
                mine["lr"], mine["value"], mode=target.mode, tolerance=tolerance, margin=margin
            )
            per_seed = [
                good_range(
                    c["lr"], c["value"], mode=target.mode, tolerance=tolerance, margin=margin
                ).width_decades
                for c in seed_curves.get(optimizer, [])
            ]
            per_seed = [w for w in per_seed if not math.isnan(w)]
            rows.append(
                {
                    "optimizer": optimizer,
                    "rule": rule,
                    "best_lr": found.best_lr,
                    "best_value": found.best_value,
                    "threshold": found.threshold,
                    "low_lr": found.low_lr,
                    "high_lr": found.high_lr,
                    "good_points": found.good_points,
                    "width_decades": found.width_decades,
                    "grid_points": len(mine),
                    "diverged_points": int(mine["value"].isna().sum()),
                    "seed_width_min": min(per_seed) if per_seed else math.nan,
                    "seed_width_max": max(per_seed) if per_seed else math.nan,
                    "n_seed_curves": max(len(per_seed), 1),
                }
            )
    return pd.DataFrame(rows, columns=WIDTH_COLUMNS)


def final_test_values(curves: pd.DataFrame, *, target: Target | None = None) -> pd.Series:
    """Each trial's test value of the target metric at its last reported epoch (DeepOBS reports the test
    performance at the end of training), by trial_id; NaN where that epoch has none (a diverged trial)."""
    target = resolve(curves, target)
    if curves.empty or target.test_key not in curves:
        return pd.Series(dtype=float)
    last = curves.sort_values(EPOCH).groupby("trial_id").tail(1)
    return last.set_index("trial_id")[target.test_key].astype(float)


def final_results(
    trials: pd.DataFrame, curves: pd.DataFrame | None = None, *, target: Target | None = None
) -> pd.DataFrame:
    """DeepOBS's baseline table, per optimizer and measure: the chosen lr's seeds of the confirmation stage
    (or, without one, the search seeds at the chosen lr, column ``stage`` says which), n (finished seeds),
    n_diverged, median, q1, q3, mean, std and the t-interval of the mean (ci_low, ci_high). Measures: the
    final validation value, and (given `curves`) the final test value."""
    target = resolve(trials, target)
    chosen = chosen_lrs(trials, target=target)
    confirm = _confirmation(trials)
    tests = final_test_values(curves, target=target) if curves is not None else pd.Series(dtype=float)
    rows = []
    for optimizer, lr in chosen.items():
        mine = confirm[confirm["optimizer"] == optimizer]
        stage = CONFIRM
        if mine.empty:
            search = stage_rows(trials, SEARCH)
            mine = search[(search["optimizer"] == optimizer) & np.isclose(search["lr"].astype(float), lr)]
            stage = SEARCH
        finished = mine[mine["status"].isin(FINISHED)]
        measures = {f"final {metric_text.short_val(target)}": finished[target.final_key]}
        if curves is not None:
            measures[f"final {metric_text.short_test(target)}"] = finished["trial_id"].map(tests)
        for measure, values in measures.items():
            x = values.dropna().to_numpy(dtype=float)
            interval = t_interval(x)
            rows.append(
                {
                    "optimizer": optimizer,
                    "measure": measure,
                    "lr": lr,
                    "stage": stage,
                    "n": len(x),
                    "n_diverged": int((mine["status"] == DIVERGED).sum()),
                    "median": float(np.median(x)) if len(x) else math.nan,
                    "q1": float(np.percentile(x, 25)) if len(x) else math.nan,
                    "q3": float(np.percentile(x, 75)) if len(x) else math.nan,
                    "mean": float(x.mean()) if len(x) else math.nan,
                    "std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                }
            )
    return pd.DataFrame(rows)


def plot_curves(trials: pd.DataFrame, *, target: Target | None = None) -> Figure:
    """The sensitivity curves, DeepOBS style: the target's final (left) and best (right) validation value
    against the learning rate (log axis), one color per optimizer. Dots are search trials (every seed),
    the line their median per lr, triangles the confirmation seeds at the chosen lr; crosses on the shaded
    strip at the worse end are trials that diverged ('+' for errors), at their lr; the bar above each
    panel spans the good-lr range (within 5% of best)."""
    target = resolve(trials, target)
    colors = optimizer_colors(trials["optimizer"])
    fig = Figure(figsize=(12.0, 4.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    strip_y = 0.03 if target.mode == "max" else 0.97
    for ax, metric in zip(axes, METRICS, strict=True):
        table = points(trials, metric=metric, target=target)
        curve = search_curve(trials, metric=metric, target=target)
        ranges = widths(trials, metric=metric, target=target)
        for i, (optimizer, color) in enumerate(colors.items()):
            mine = table[table["optimizer"] == optimizer]
            search, confirm = mine[mine["stage"] == SEARCH], mine[mine["stage"] == CONFIRM]
            ax.scatter(search["lr"], search["value"], s=16, color=color, alpha=0.55)
            line = curve[curve["optimizer"] == optimizer]
            ax.plot(line["lr"], line["value"], color=color, lw=1.5, label=optimizer)
            jitter = 10 ** np.linspace(-0.04, 0.04, max(len(confirm), 1))[: len(confirm)]
            ax.scatter(
                confirm["lr"] * jitter,
                confirm["value"],
                marker="^",
                s=22,
                color=color,
                edgecolors="black",
                linewidths=0.4,
                zorder=4,
            )
            for status, marker in ((DIVERGED, "x"), (ERROR, "+")):
                bad = mine[mine["marked"] == status]
                ax.scatter(
                    bad["lr"],
                    np.full(len(bad), strip_y),
                    marker=marker,
                    color=color,
                    s=30,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
            good = ranges[(ranges["optimizer"] == optimizer) & (ranges["rule"] == RELATIVE_RULE)]
            if len(good) and good["good_points"].iloc[0] > 0:
                half = 10 ** (_grid_step(line["lr"]) / 2)  # a bar spans its grid points' cells
                y = 0.97 - 0.035 * i if target.mode == "max" else 0.03 + 0.035 * i
                ax.plot(
                    [good["low_lr"].iloc[0] / half, good["high_lr"].iloc[0] * half],
                    [y, y],
                    color=color,
                    lw=3,
                    solid_capstyle="butt",
                    transform=ax.get_xaxis_transform(),
                )
        ax.set_xscale("log")
        lrs = table["lr"][table["lr"] > 0]
        if len(lrs):
            margin = max(_grid_step(lrs), 0.1)
            ax.set_xlim(lrs.min() / 10**margin, lrs.max() * 10**margin)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_title(f"{metric} {metric_text.val_words(target)}")
        ax.grid(True, which="major", alpha=0.3)
        ax.add_patch(_strip(ax, strip_y))
    shown = pd.concat([points(trials, metric=m, target=target)["value"] for m in METRICS]).dropna()
    if len(shown):  # room beyond the data for the strip (worse end) and the bars (better end); once, shared
        low, high = float(shown.min()), float(shown.max())
        span = max(high - low, 1e-3 * max(abs(high), 1.0))
        strip, bars = 0.1 * span, (0.06 + 0.035 * len(colors)) * span
        axes[0].set_ylim(low - strip, high + bars) if target.mode == "max" else axes[0].set_ylim(
            low - bars, high + strip
        )
    axes[0].set_ylabel(f"{metric_text.val_words(target)} ({metric_text.direction(target)})")
    handles, _ = axes[0].get_legend_handles_labels()
    handles += [
        Line2D([], [], ls="", marker="o", color="grey", label="search seed"),
        Line2D([], [], ls="", marker="^", mec="black", color="grey", label="confirmation seed"),
        Line2D([], [], ls="", marker="x", color="grey", label="diverged"),
        Line2D([], [], ls="", marker="+", color="grey", label="error"),
        Line2D([], [], lw=4, color="grey", label=f"good range ({RELATIVE_RULE})"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle("Learning-rate sensitivity (DeepOBS protocol)")
    return fig


def _grid_step(lrs: pd.Series) -> float:
    """The median spacing of a grid's distinct learning rates, in decades (0 for a single point)."""
    distinct = np.unique(np.log10(lrs.to_numpy(dtype=float)))
    return float(np.median(np.diff(distinct))) if len(distinct) > 1 else 0.0


def _strip(ax: Axes, strip_y: float) -> Rectangle:
    """The shaded strip at the worse end of the metric axis where diverged and failed trials are drawn."""
    return Rectangle(
        (0.0, strip_y - 0.03), 1.0, 0.06, transform=ax.transAxes, color="#fbe3e1", zorder=0, lw=0
    )


def plot_final(
    trials: pd.DataFrame, curves: pd.DataFrame | None = None, *, target: Target | None = None
) -> Figure:
    """The final results' spread per optimizer (box: quartiles and median; dots: every seed): the final
    validation value and, given `curves`, the final test value of the chosen lr's confirmation seeds."""
    target = resolve(trials, target)
    chosen = chosen_lrs(trials, target=target)
    confirm = _confirmation(trials)
    tests = final_test_values(curves, target=target) if curves is not None else None
    measures = [("final " + metric_text.val_words(target), None)]
    if tests is not None:
        measures.append(("final " + metric_text.test_words(target), tests))
    colors = optimizer_colors(trials["optimizer"])
    fig = Figure(figsize=(4.5 * len(measures) + 1, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(measures)))
    names = list(chosen.index)
    for ax, (title, test) in zip(axes, measures, strict=True):
        data = []
        for optimizer in names:
            mine = confirm[(confirm["optimizer"] == optimizer) & confirm["status"].isin(FINISHED)]
            values = mine["trial_id"].map(test) if test is not None else mine[target.final_key]
            data.append(values.dropna().to_numpy(dtype=float))
        ax.boxplot(
            data, tick_labels=[f"{o}\nlr {chosen[o]:.3g}" for o in names], widths=0.5, showfliers=False
        )
        for i, (optimizer, values) in enumerate(zip(names, data, strict=True), start=1):
            offsets = np.linspace(-0.12, 0.12, max(len(values), 1))[: len(values)]
            ax.scatter(i + offsets, values, s=14, color=colors[optimizer], zorder=3)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Final results at the chosen lr, confirmation seeds")
    return fig


def write_section(experiment_dir: str | os.PathLike[str], *, target: Target | None = None) -> Path:
    """Write report/lr_sensitivity.md with its two figures into `experiment_dir` and return its path."""
    root = Path(experiment_dir)
    experiment = read_experiment(root, target=target)
    trials, curves = experiment.trials, experiment.curves
    target = resolve(trials)
    out = root / REPORT_DIR_NAME
    out.mkdir(exist_ok=True)
    atomic.save_figure(out / CURVES_FIGURE, plot_curves(trials))
    has_confirmation = not _confirmation(trials).empty
    if has_confirmation:
        atomic.save_figure(out / FINAL_FIGURE, plot_final(trials, curves))
    else:
        (out / FINAL_FIGURE).unlink(missing_ok=True)
    text = render_section(trials, curves, target=target, final_figure=has_confirmation)
    atomic.write_text(out / SECTION_FILE, text)
    return out / SECTION_FILE


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def render_section(
    trials: pd.DataFrame, curves: pd.DataFrame, *, target: Target | None = None, final_figure: bool = True
) -> str:
    """The section's markdown: what was run, the widths, the final results, what to make of them."""
    target = resolve(trials, target)
    search = stage_rows(trials, SEARCH)
    lrs = np.sort(search["lr"].dropna().astype(float).unique())
    seeds = int(search.groupby(["optimizer", "lr"])["seed"].nunique().max()) if len(search) else 0
    confirm = _confirmation(trials)
    confirm_seeds = int(confirm.groupby("optimizer")["seed"].nunique().max()) if len(confirm) else 0
    epochs = (
        ", ".join(str(int(e)) for e in trials["max_epochs"].dropna().unique())
        if "max_epochs" in trials
        else ""
    )
    low, high = (_fmt(lrs.min()), _fmt(lrs.max())) if len(lrs) else ("-", "-")
    step = _fmt(_grid_step(pd.Series(lrs)), 3) if len(lrs) > 1 else "-"
    lines = [
        "# Learning-rate sensitivity (DeepOBS protocol)",
        "",
        f"Each optimizer's learning rate on a log grid of {len(lrs)} points from {low} to {high}, {seeds} "
        f"search seed(s) per point, every other hyperparameter at its default, a constant learning rate, "
        f"{epochs or '?'} epochs, no early stopping; the chosen lr retrained on {confirm_seeds} fresh seeds. "
        f"Target: {metric_text.val_words(target)} ({metric_text.direction(target)}).",
        "",
        f"![sensitivity curves]({CURVES_FIGURE})",
        "",
        "## Width of the good-lr range",
        "",
        "On the search curve of the final validation value (the median over the search seeds per lr; a "
        "diverged seed counts as the worst value), the contiguous run of grid points around the best one "
        f"that are good: `{RELATIVE_RULE}` (at most {TOLERANCE:.0%} of the best value worse than it) or "
        f"`{SPREAD_RULE}` (at most {SPREAD_STDS:g} standard deviations of the confirmation seeds worse than "
        f"the best point). Width = log10(highest good lr / lowest good lr) in decades; grid spacing {step} "
        "decades.",
        "",
    ]
    table = widths(trials, target=target)
    rows = [
        [
            r["optimizer"],
            r["rule"],
            _fmt(r["best_lr"], 3),
            _fmt(r["best_value"]),
            _fmt(r["threshold"]),
            f"{_fmt(r['low_lr'], 3)} .. {_fmt(r['high_lr'], 3)}",
            str(int(r["good_points"])),
            _fmt(r["width_decades"], 3),
            "-"
            if r["n_seed_curves"] < 2
            else f"{_fmt(r['seed_width_min'], 3)} .. {_fmt(r['seed_width_max'], 3)}",
            f"{int(r['diverged_points'])}/{int(r['grid_points'])}",
        ]
        for _, r in table.iterrows()
    ]
    headers = [
        "optimizer",
        "rule",
        "best lr",
        "best",
        "threshold",
        "good lrs",
        "points",
        "width (decades)",
        "per-seed widths",
        "diverged",
    ]
    lines += [markdown_table(headers, rows), ""]
    lines += _width_sentences(table)
    if not table.empty and table["n_seed_curves"].max() < 2:
        lines += [
            "One search seed per lr (as DeepOBS): the widths carry no spread over seeds; rerun with "
            "`--seeds 3` for per-seed widths.",
            "",
        ]
    final = final_results(trials, curves, target=target)
    lines += ["## Final results at the chosen lr", ""]
    if final.empty:
        lines += ["No optimizer has a chosen learning rate.", ""]
    else:
        rows = [
            [
                r["optimizer"],
                _fmt(r["lr"], 3),
                r["measure"],
                r["stage"],
                str(int(r["n"])),
                str(int(r["n_diverged"])),
                _fmt(r["median"]),
                f"{_fmt(r['q1'])} .. {_fmt(r['q3'])}",
                f"{_fmt(r['mean'])} ± {_fmt(r['std'], 2)}",
                f"{_fmt(r['ci_low'])} .. {_fmt(r['ci_high'])}",
            ]
            for _, r in final.iterrows()
        ]
        headers = [
            "optimizer",
            "lr",
            "measure",
            "seeds from",
            "n",
            "diverged",
            "median",
            "quartiles",
            "mean ± std",
            "95% t-interval",
        ]
        lines += [markdown_table(headers, rows), ""]
        if final_figure:
            lines += [f"![final results]({FINAL_FIGURE})", ""]
    lines += _selection_notes(trials, target)
    return "\n".join(lines).rstrip() + "\n"


def _width_sentences(table: pd.DataFrame) -> list[str]:
    """One line per rule: the optimizers from the widest good-lr range to the narrowest."""
    lines = []
    for rule, rows in table.groupby("rule", sort=False):
        ranked = rows.sort_values("width_decades", ascending=False)
        listed = ", ".join(f"{r['optimizer']} {_fmt(r['width_decades'], 3)}" for _, r in ranked.iterrows())
        lines.append(f"- {rule}: widths in decades, widest first: {listed}.")
    return [*lines, ""] if lines else []


def _selection_notes(trials: pd.DataFrame, target: Target) -> list[str]:
    """Where optsweep's choice (best validation value over epochs) and DeepOBS's (final value) differ."""
    chosen = chosen_lrs(trials, target=target)
    final_curve = search_curve(trials, metric="final", target=target)
    notes = []
    for optimizer, lr in chosen.items():
        mine = final_curve[(final_curve["optimizer"] == optimizer) & final_curve["value"].notna()]
        if mine.empty:
            continue
        sign = 1.0 if target.mode == "max" else -1.0
        deepobs = float(mine.loc[(sign * mine["value"]).idxmax(), "lr"])
        if not math.isclose(deepobs, lr, rel_tol=1e-6):
            notes.append(
                f"- {optimizer}: optsweep chose lr {lr:.3g} by the best validation value over epochs; "
                f"DeepOBS's rule (the final value) would have chosen {deepobs:.3g}."
            )
        lowest = stage_rows(trials, SEARCH)
        lowest = lowest[(lowest["optimizer"] == optimizer) & (lowest["status"] == DIVERGED)]["lr"]
        if len(lowest):
            notes.append(
                f"- {optimizer}: diverged from lr {float(lowest.min()):.3g} (its lowest diverged lr)."
            )
    return ["## Notes", "", *notes, ""] if notes else []


def main(argv: list[str] | None = None) -> int:
    """`python -m optsweep.analysis.sensitivity DIR`: (re)write the section of a finished experiment."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m optsweep.analysis.sensitivity EXPERIMENT_DIR", file=sys.stderr)
        return 2
    try:
        print(write_section(args[0]))
    except (FileNotFoundError, ValueError) as error:  # NotAnExperimentError, BadConfigError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
