"""The report's figures, drawn with matplotlib's object API (`Figure`, not pyplot): no global
backend is touched, so it runs headless and leaves a notebook's inline backend alone.

Every function returns a `matplotlib.figure.Figure` (or None when the plot does not apply). The
metric shown, its axis labels and which end is "better" follow the experiment's target (a
``target=`` keyword, by default the one the given table carries; see `analysis.target`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from optsweep.analysis import metric_text
from optsweep.analysis.binning import axis_groups, format_value
from optsweep.analysis.heatmap import lr_wd_heatmap
from optsweep.analysis.stats import expected_column
from optsweep.analysis.summary import REPORTED_FROM, configurations, stage_rows
from optsweep.analysis.target import resolve
from optsweep.vocabulary import (
    COMPLETED,
    DIVERGED,
    FINISHED,
    SEARCH,
    STAGE_COLUMN,
    STOPPED_EARLY,
    TRAIN_LOSS,
    Target,
)

__all__ = [
    "learning_curves",
    "lr_sensitivity",
    "lr_wd_heatmap",
    "optimizer_colors",
    "seed_mean",
    "tuning_budget",
]

SPAN_FOR_LOG = 10.0  # a min metric whose values span this factor or more gets a log axis
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_WIDE = (8.0, 4.8)


def optimizer_colors(optimizers: list[str] | pd.Series) -> dict[str, str]:
    """One fixed color per optimizer name (sorted), the same in every figure."""
    names = sorted(set(optimizers))
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}


def lr_sensitivity(
    trials: pd.DataFrame, summary: pd.DataFrame | None = None, *, target: Target | None = None
) -> Figure:
    """Each search trial's best value of the target metric (e.g. best validation accuracy) against
    learning rate (log axis), per optimizer.

    Dots are trials (filled: completed, hollow: stopped early by the scheduler); the line joins
    the best configuration mean at each learning rate (per log bin, for random search) among the
    configurations allowed to be chosen; a star marks each optimizer's chosen configuration;
    crosses on a strip at the worse end of the axis (bottom for a max metric, top for a min one)
    are trials that diverged at that learning rate.
    """
    target = resolve(trials, target)
    colors = optimizer_colors(trials["optimizer"])
    configs = configurations(trials, target=target)
    trials = stage_rows(trials, SEARCH)
    strip_y = 0.03 if target.mode == "max" else 0.97
    strip = "bottom" if target.mode == "max" else "top"
    fig = Figure(figsize=(9.0, 4.8), layout="constrained")
    ax = fig.subplots()
    for optimizer, color in colors.items():
        mine = trials[(trials["optimizer"] == optimizer) & trials["lr"].notna()]
        for status, face in ((COMPLETED, color), (STOPPED_EARLY, "none")):
            points = mine[mine["status"] == status]
            ax.scatter(
                points["lr"],
                points[target.best_key],
                s=18,
                facecolors=face,
                edgecolors=color,
                alpha=0.5,
                linewidths=0.8,
            )
        envelope = _best_per_lr(configs[(configs["optimizer"] == optimizer) & configs["eligible"]], target)
        ax.plot(envelope.index, envelope.to_numpy(), color=color, lw=2, marker="o", ms=4, label=optimizer)
        diverged = mine[mine["status"] == DIVERGED]
        ax.scatter(
            diverged["lr"],
            np.full(len(diverged), strip_y),
            marker="x",
            color=color,
            s=36,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )
    if summary is not None:
        best = summary[summary["config_id"].notna()]
        ax.scatter(
            best["lr"],
            best["mean"],
            marker="*",
            s=220,
            c=[colors[o] for o in best["optimizer"]],
            edgecolors="black",
            linewidths=0.8,
            zorder=5,
        )
    ax.set_xscale("log")
    _fit_log_x(ax, trials["lr"])
    ax.set_xlabel("learning rate (log scale)")
    plotted = trials.loc[trials["status"].isin([COMPLETED, STOPPED_EARLY]), target.best_key]
    log = _metric_axis(ax, plotted, target)
    ax.set_ylabel(metric_text.axis_label(target, "best") + (" (log scale)" if log else ""))
    ax.set_title("Learning-rate sensitivity")
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], ls="", marker="o", color="grey", label="trial (completed)"),
        Line2D([], [], ls="", marker="o", mfc="none", color="grey", label="trial (stopped early)"),
        Line2D([], [], ls="", marker="*", ms=12, mec="black", color="grey", label="chosen configuration"),
        Line2D([], [], ls="", marker="x", color="grey", label=f"diverged ({strip} strip)"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    _diverged_strip(ax, strip_y)
    return fig


def learning_curves(curves: pd.DataFrame, summary: pd.DataFrame, *, target: Target | None = None) -> Figure:
    """The target metric on the validation split (e.g. validation accuracy) and the training loss
    per epoch of each optimizer's chosen configuration: thin lines are its seeds; the thick line is
    their mean and the band their min-max range, both drawn only over the epochs every seed reached
    (`seed_mean`), so seeds that the scheduler stopped early do not make the mean jump. Beyond that,
    only the surviving seeds are drawn."""
    target = resolve(summary, target)
    colors = optimizer_colors(summary["optimizer"])
    fig = Figure(figsize=(10.0, 4.4), layout="constrained")
    acc_ax, loss_ax = fig.subplots(1, 2)
    handles = []
    drawn = []
    for _, row in summary[summary["config_id"].notna()].iterrows():
        runs = curves[(curves["config_id"] == row.config_id) & curves["status"].isin(FINISHED)]
        if STAGE_COLUMN in runs and REPORTED_FROM in row:
            runs = runs[runs[STAGE_COLUMN].fillna(SEARCH) == row[REPORTED_FROM]]
        color = colors[row.optimizer]
        details = f"{row.config_id}, lr={format_value(row.lr)}, {row.n_seeds} seeds"
        for ax, metric in ((acc_ax, target.key), (loss_ax, TRAIN_LOSS)):
            wide = runs.pivot_table(index="epoch", columns="trial_id", values=metric, aggfunc="last")
            if wide.empty:
                continue
            ax.plot(wide.index, wide.to_numpy(), color=color, lw=0.9, alpha=0.45)
            if metric == target.key:
                drawn.append(wide.stack())
            stats = seed_mean(wide)
            if not stats.empty:
                ax.fill_between(stats.index, stats["low"], stats["high"], color=color, alpha=0.15, lw=0)
                ax.plot(stats.index, stats["mean"], color=color, lw=2.2)
            if metric == target.key and wide.shape[1] > 1:
                last = wide.index.max()
                if stats.empty:
                    details += "; seeds only"
                elif stats.index.max() < last:
                    details += f"; mean to epoch {stats.index.max():g}"
        handles.append(Line2D([], [], color=color, lw=2.2, label=f"{row.optimizer} ({details})"))
    log = _metric_axis(acc_ax, pd.concat(drawn) if drawn else pd.Series(dtype=float), target)
    scale = " (log scale)" if log else ""
    acc_ax.set_ylabel(f"{metric_text.val_words(target)} ({metric_text.direction(target)}){scale}")
    loss_ax.set_ylabel("training loss (log scale)")
    loss_ax.set_yscale("log")
    _log_ticks(loss_ax.yaxis)
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.legend(handles=handles, fontsize=8, loc=_away_from_curves(target))
    fig.suptitle(
        "Learning curves of each optimizer's chosen configuration\n(thin: seeds; thick line and band: "
        "mean and range of the seeds, over the epochs every seed reached)",
        fontsize=11,
    )
    return fig


def seed_mean(wide: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max ("mean", "low", "high") across the seeds (columns) of a per-epoch table,
    over the epochs every seed reached: up to the earliest last epoch of any seed. An epoch in that
    range that a seed is missing is NaN (a gap), never a mean over fewer seeds. Empty when fewer
    than two epochs are shared (there is no curve to draw, only seeds)."""
    empty = pd.DataFrame(columns=["mean", "low", "high"], dtype=float)
    ends = [wide[column].last_valid_index() for column in wide.columns]
    if not ends or any(end is None for end in ends):
        return empty
    shared = wide.loc[wide.index <= min(ends)]
    complete = shared.notna().all(axis=1)
    if complete.sum() < 2:
        return empty
    stats = pd.DataFrame({"mean": shared.mean(axis=1), "low": shared.min(axis=1), "high": shared.max(axis=1)})
    return stats.where(complete)


def tuning_budget(budget: pd.DataFrame, *, target: Target | None = None) -> Figure:
    """Expected best configuration score after k random configurations (Dodge et al. 2019), per
    optimizer, with a ±1 standard deviation band clipped to the scores' range (the best of k
    draws can never leave it); the expected maximum of a max target, the minimum of a min one."""
    target = resolve(budget, target)
    expected = expected_column(target.mode)
    colors = optimizer_colors(budget["optimizer"])
    fig = Figure(figsize=_WIDE, layout="constrained")
    ax = fig.subplots()
    for optimizer, curve in budget.groupby("optimizer", sort=True):
        color = colors[optimizer]
        low = (curve[expected] - curve["std"]).clip(lower=curve["score_min"])
        high = (curve[expected] + curve["std"]).clip(upper=curve["score_max"])
        ax.fill_between(curve["k"], low, high, color=color, alpha=0.15, lw=0)
        n = int(curve["n_configs"].iloc[0])
        ax.plot(
            curve["k"],
            curve[expected],
            color=color,
            lw=2,
            marker="o" if n <= 30 else None,
            ms=3,
            label=f"{optimizer} ({n} configurations)",
        )
    ax.set_xlabel("configurations tried at random (k)")
    ax.set_ylabel(metric_text.axis_label(target, "expected best"))
    ax.set_title(
        "Tuning budget: expected best result after k random configurations\n"
        "(band: ±1 std of the best of k draws, its spread; clipped to the range of scores)",
        fontsize=11,
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc=_away_from_curves(target))
    return fig


def _away_from_curves(target: Target) -> str:
    """Where a legend least covers curves that improve over time: below them for a max metric."""
    return "lower right" if target.mode == "max" else "upper right"


def _best_per_lr(configs: pd.DataFrame, target: Target) -> pd.Series:
    """The best configuration mean per learning rate (per log bin when lr was sampled)."""
    configs = configs[configs["lr"].notna() & configs["mean"].notna()]
    if configs.empty:
        return pd.Series(dtype=float)
    keys, _ = axis_groups(configs["lr"].to_numpy(dtype=float))
    grouped = configs.groupby(keys)["mean"]
    best = grouped.idxmax() if target.mode == "max" else grouped.idxmin()
    chosen = configs.loc[best.to_numpy()]
    return pd.Series(chosen["mean"].to_numpy(), index=chosen["lr"].to_numpy()).sort_index()


def _metric_axis(ax: Axes, values: pd.Series, target: Target) -> bool:
    """Put the target metric on a log axis when it is a min metric (a loss, perplexity, MSE) whose
    values span SPAN_FOR_LOG or more: bad configurations would otherwise squash the good end, where
    the comparison happens. Max metrics (accuracy-like, bounded) stay linear. True if log."""
    values = values.dropna()
    if target.mode != "min" or values.empty or values.min() <= 0:
        return False
    if values.max() < SPAN_FOR_LOG * values.min():
        return False
    ax.set_yscale("log")
    _log_ticks(ax.yaxis)
    return True


def _fit_log_x(ax: Axes, values: pd.Series) -> None:
    """Show every value (diverged ones are drawn in axes coordinates, which autoscaling ignores)."""
    numbers = pd.to_numeric(values, errors="coerce")
    positive = numbers[numbers > 0]
    if len(positive):
        low, high = np.log10(positive.min()), np.log10(positive.max())
        margin = max(0.1 * (high - low), 0.15)
        ax.set_xlim(10 ** (low - margin), 10 ** (high + margin))


def _log_ticks(axis: Axis) -> None:
    """Plain labels ("0.001", "0.1", "2") at round values of a log axis, on major ticks only: one
    per decade when the visible range shows at least two decades, else at 1-2-5 or every integer
    mantissa, whichever first gives two labels. Minor ticks stay unlabelled."""
    low, high = sorted(axis.get_view_interval())
    for subs in ((1.0,), (1.0, 2.0, 5.0), tuple(range(1, 10))):
        locator = LogLocator(base=10.0, subs=subs)
        ticks = [t for t in locator.tick_values(low, high) if low <= t <= high]
        if len(ticks) >= 2:
            break
    axis.set_major_locator(locator)
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(LogLocator(base=10.0, subs="auto"))
    axis.set_minor_formatter(NullFormatter())


def _diverged_strip(ax: Axes, strip_y: float) -> None:
    """Leave room beyond the worst point (below it when `strip_y` is near 0, above it near 1) for
    the strip of diverged markers, and shade the strip so its crosses do not read as values."""
    log = ax.get_yscale() == "log"
    low, high = np.log10(ax.get_ylim()) if log else ax.get_ylim()
    pad = 0.08 * (high - low)  # in the axis's own (linear or log) coordinates
    limits = np.array((low - pad, high) if strip_y < 0.5 else (low, high + pad))
    ax.set_ylim(*(10.0**limits if log else limits))
    bottom = strip_y - 0.03
    strip = Rectangle((0.0, bottom), 1.0, 0.06, transform=ax.transAxes, color="#fbe3e1", zorder=0, lw=0)
    ax.add_patch(strip)
    label = {"ha": "left", "va": "center", "fontsize": 7, "color": "#a50f15"}
    ax.text(0.005, strip_y, "diverged", transform=ax.transAxes, **label)
