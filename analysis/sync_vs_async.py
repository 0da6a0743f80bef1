"""The sync-vs-async report (`sweeps/sync_vs_async.py` runs the trials): the target metric against
training time and against updates, throughput, time to a target value, the staleness distribution of the
asynchronous runs, and what a straggler costs each mode.

Reads a curves table (one row per run and epoch: the run's label, mode and straggler delay beside the
epoch's reported metrics) and each asynchronous run's staleness histogram; writes, atomically, into the
report directory: curves.csv, runs.csv (one row per run), report.md, target_vs_time.png,
target_vs_updates.png, staleness.png. No Ray, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from optsweep import vocabulary as v
from optsweep.analysis import atomic
from optsweep.analysis.markdown import markdown_table

CURVES_FILE = "curves.csv"
RUNS_FILE = "runs.csv"
REPORT_FILE = "report.md"
TIME_FIGURE = "target_vs_time.png"
UPDATES_FIGURE = "target_vs_updates.png"
STALENESS_FIGURE = "staleness.png"
FILES = (RUNS_FILE, CURVES_FILE, REPORT_FILE, TIME_FIGURE, UPDATES_FIGURE, STALENESS_FIGURE)


@dataclass(frozen=True)
class Comparison:
    """What was compared: the report's description of the runs and the target it measures them by."""

    task: str
    workers: int
    epochs: int
    optimizer: str
    lr: float
    seed: int
    straggler_delay: float
    target_value: float
    target: v.Target = v.DEFAULT_TARGET
    updates_per_epoch: Mapping[str, int] = field(default_factory=dict)
    """Per mode: optimizer updates per epoch, for runs whose results do not report `updates` (sync)."""


def curves_table(curves: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """The per-epoch table of curves.csv: cumulative training time, updates for every mode (counted from
    `comparison.updates_per_epoch` where a run did not report them), the columns the report uses."""
    target = comparison.target
    curves = curves.sort_values([v.RUN_COLUMN, v.EPOCH]).copy()
    curves[v.TRAIN_TIME_S] = curves.groupby(v.RUN_COLUMN)[v.EPOCH_TIME_S].cumsum()
    if v.UPDATES not in curves:
        curves[v.UPDATES] = math.nan
    for mode, per_epoch in comparison.updates_per_epoch.items():
        counted = (curves[v.MODE_COLUMN] == mode) & curves[v.UPDATES].isna()
        curves.loc[counted, v.UPDATES] = curves.loc[counted, v.EPOCH] * per_epoch
    keep = [v.RUN_COLUMN, v.MODE_COLUMN, v.STRAGGLER_DELAY_S, v.EPOCH, v.UPDATES, v.TRAIN_TIME_S]
    keep += [v.EPOCH_TIME_S, v.SAMPLES_PER_S, v.TRAIN_LOSS, target.key, target.test_key]
    keep += [v.STALENESS_MEAN, v.STALENESS_P90, v.STALENESS_MAX]
    return curves[[c for c in keep if c in curves]].reset_index(drop=True)


def runs_table(
    curves: pd.DataFrame, staleness: Mapping[str, Sequence[int]], comparison: Comparison
) -> pd.DataFrame:
    """One row per run (runs.csv) from `curves_table`'s output: epochs, updates, training time, median
    throughput after the first epoch, final and best target, time and updates to the target value, and
    the mean and largest staleness of its histogram (NaN for a run without one)."""
    target, goal = comparison.target, comparison.target_value
    rows = []
    for label, curve in curves.groupby(v.RUN_COLUMN, sort=False):
        reached = (
            curve[curve[target.key] >= goal] if target.mode == "max" else curve[curve[target.key] <= goal]
        )
        counts = list(staleness.get(str(label), []))
        total = sum(counts)
        # The first epoch pays for warm-up: throughput is its median over the later epochs.
        throughput = curve[v.SAMPLES_PER_S].iloc[1:] if len(curve) > 1 else curve[v.SAMPLES_PER_S]
        rows.append(
            {
                v.RUN_COLUMN: label,
                v.MODE_COLUMN: curve[v.MODE_COLUMN].iloc[0],
                v.STRAGGLER_DELAY_S: curve[v.STRAGGLER_DELAY_S].iloc[0],
                v.EPOCHS_COLUMN: int(curve[v.EPOCH].max()),
                v.UPDATES: int(curve[v.UPDATES].max()),
                v.TRAIN_TIME_S: float(curve[v.TRAIN_TIME_S].max()),
                v.SAMPLES_PER_S: float(throughput.median()),
                target.final_key: float(curve[target.key].iloc[-1]),
                target.best_key: float(target.best_of(curve[target.key])),
                v.time_to_key(goal): float(reached[v.TRAIN_TIME_S].iloc[0]) if len(reached) else math.nan,
                v.updates_to_key(goal): float(reached[v.UPDATES].iloc[0]) if len(reached) else math.nan,
                v.STALENESS_MEAN: sum(i * c for i, c in enumerate(counts)) / total if total else math.nan,
                v.STALENESS_MAX: max((i for i, c in enumerate(counts) if c), default=math.nan),
            }
        )
    return pd.DataFrame(rows)


def straggler_costs(runs: pd.DataFrame, target: v.Target) -> list[str]:
    """Per mode with a run without and one with a straggler: its throughput and training time ratios and
    the final target value of both, one markdown bullet each."""
    lines = []
    for mode in runs[v.MODE_COLUMN].drop_duplicates():
        base = runs[(runs[v.MODE_COLUMN] == mode) & (runs[v.STRAGGLER_DELAY_S] == 0)]
        slow = runs[(runs[v.MODE_COLUMN] == mode) & (runs[v.STRAGGLER_DELAY_S] > 0)]
        if len(base) and len(slow):
            b, s = base.iloc[0], slow.iloc[0]
            lines.append(
                f"- {mode}: throughput x{s[v.SAMPLES_PER_S] / b[v.SAMPLES_PER_S]:.2f}, "
                f"training time x{s[v.TRAIN_TIME_S] / b[v.TRAIN_TIME_S]:.2f}, "
                f"final {target.key} {b[target.final_key]:.4f} -> {s[target.final_key]:.4f}"
            )
    return lines


def report_markdown(
    runs: pd.DataFrame, staleness: Mapping[str, Sequence[int]], comparison: Comparison
) -> str:
    c = comparison
    lines = [
        "# Synchronous data parallelism vs asynchronous parameter server",
        "",
        f"Task {c.task}, {c.workers} workers, {c.epochs} epochs, {c.optimizer} lr {c.lr:g}, seed {c.seed}; "
        f"straggler: the last worker sleeps {c.straggler_delay:g} s before each step. Training time excludes "
        "start-up and evaluation.",
        "",
        markdown_table(
            list(runs.columns),
            [
                [f"{x:.4g}" if isinstance(x, float) else x for x in row]
                for row in runs.itertuples(index=False)
            ],
        ),
        "",
        "## What the straggler costs",
        "",
        *straggler_costs(runs, c.target),
        "",
        "## Staleness of the asynchronous runs (fraction of gradients)",
        "",
    ]
    for label, counts in staleness.items():
        total = sum(counts) or 1
        shown = ", ".join(f"{i}: {n / total:.3f}" for i, n in enumerate(counts) if n)
        lines.append(f"- {label} ({sum(counts)} gradients): {shown}")
    lines += ["", *(f"![{name}]({name})" for name in (TIME_FIGURE, UPDATES_FIGURE, STALENESS_FIGURE)), ""]
    return "\n".join(lines)


def write_report(
    directory: Path, curves: pd.DataFrame, staleness: Mapping[str, Sequence[int]], comparison: Comparison
) -> str:
    """Write the report's files (FILES) into `directory`, each atomically; returns report.md's text."""
    directory.mkdir(parents=True, exist_ok=True)
    table = curves_table(curves, comparison)
    runs = runs_table(table, staleness, comparison)
    atomic.write_csv(directory / CURVES_FILE, table)
    atomic.write_csv(directory / RUNS_FILE, runs)
    target = comparison.target
    for x, name, label in (
        (v.TRAIN_TIME_S, TIME_FIGURE, "training time (s)"),
        (v.UPDATES, UPDATES_FIGURE, "optimizer updates"),
    ):
        atomic.save_figure(directory / name, _target_against(table, x, label, target), dpi=100)
    atomic.save_figure(directory / STALENESS_FIGURE, _staleness_bars(staleness), dpi=100)
    text = report_markdown(runs, staleness, comparison)
    atomic.write_text(directory / REPORT_FILE, text)
    return text


def _target_against(curves: pd.DataFrame, x: str, x_label: str, target: v.Target) -> Figure:
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for label, curve in curves.groupby(v.RUN_COLUMN, sort=False):
        style = "--" if curve[v.STRAGGLER_DELAY_S].iloc[0] else "-"
        ax.plot(curve[x], curve[target.key], style, marker="o", markersize=3, label=str(label))
    ax.set_xlabel(x_label)
    ax.set_ylabel(target.label)
    ax.legend()
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _staleness_bars(staleness: Mapping[str, Sequence[int]]) -> Figure:
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for label, counts in staleness.items():
        total = sum(counts) or 1
        ax.bar(
            [i + (0.2 if "straggler" in label else -0.2) for i in range(len(counts))],
            [c / total for c in counts],
            width=0.4,
            label=label,
        )
    ax.set_xlabel("staleness (updates applied since the worker pulled)")
    ax.set_ylabel("fraction of gradients")
    if staleness:
        ax.legend()
    figure.tight_layout()
    return figure
