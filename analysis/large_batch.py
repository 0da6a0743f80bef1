"""The large-batch section: accuracy against batch size, steps to a target, and where scaling breaks.

Reads a study written by sweeps/large_batch.py: `<root>/large_batch.json` (batch sizes, base batch, each
optimizer's base lr and scaling rule, the training-set size) and one optsweep experiment per batch size
(`<root>/b<B>/`). No Ray, no torch.

    python -m optsweep.analysis.large_batch RESULTS/large_batch    # writes RESULTS/large_batch/report/

Definitions (each a function below, tested on hand-made tables):

- accuracy at a batch size: each optimizer's chosen lr (by `analysis.summarize`: the best search
  configuration, reported on its confirmation seeds when there are any), the test metric at each seed's
  best validation epoch, its mean and t-interval over seeds; its drop from the reference with Welch's
  interval of the difference.
- the reference: SGD at the smallest batch (Goyal et al.'s small-batch baseline), or, without SGD, the
  best optimizer there.
- scaling holds at B when the mean is within `tolerance` of the reference (on the metric's side: no more
  than `tolerance` below for accuracy); `holds_up_to` is the largest B up to which it holds at every batch
  size from the smallest, `breaks_at` the first B where it does not (None: it never breaks here).
- steps to target: the first epoch whose validation metric reaches the target, times the optimizer steps
  per epoch, ceil(n_train / B); a seed that never reaches it counts as not reached (infinite steps). The
  default target is the reference's mean best validation value minus `tolerance`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from optsweep import analysis
from optsweep.analysis import atomic, plots
from optsweep.vocabulary import DIVERGED, EPOCH, FINISHED, SEARCH, STAGE_COLUMN, Target

RECORD_FILE = "large_batch.json"
SECTION_FILE = "large_batch.md"
TABLE_FILE = "large_batch.csv"
STEPS_FILE = "large_batch_steps.csv"
FIGURES = ("accuracy_vs_batch.png", "steps_to_target.png")
DEFAULT_TOLERANCE = 0.01
"""One point of accuracy: Goyal et al. call 8k's 23.74% top-1 error (vs 23.60% at 256) a match, and
the drop beyond it about 1 to 3 points (their Table 1 / Fig. 1)."""
REFERENCE_OPTIMIZER = "sgd"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class LargeBatchStudy:
    """A large-batch study read back: its record, and its trials and curves with a batch_size column."""

    record: dict[str, Any]
    trials: pd.DataFrame
    curves: pd.DataFrame
    target: Target


def read(root: str | os.PathLike[str]) -> LargeBatchStudy:
    """Every batch size's experiment below `root` (those not run yet are skipped)."""
    root = Path(root)
    record_path = root / RECORD_FILE
    if not record_path.is_file():
        raise FileNotFoundError(f"not a large-batch study: no {RECORD_FILE} in {root}")
    record = json.loads(record_path.read_text())
    trials, curves, targets = [], [], set()
    for batch, name in sorted(record["experiments"].items(), key=lambda item: int(item[0])):
        directory = root / name
        if not directory.is_dir():
            continue
        target = analysis.target_of(directory)
        targets.add(target)
        trials.append(analysis.load(directory).assign(batch_size=int(batch)))
        curves.append(analysis.curves(directory).assign(batch_size=int(batch)))
    if not trials:
        raise FileNotFoundError(f"no batch size of the large-batch study in {root} has run yet")
    if len(targets) != 1:
        raise ValueError(f"the batch sizes' experiments in {root} have different targets: {sorted(targets)}")
    return LargeBatchStudy(
        record, pd.concat(trials, ignore_index=True), pd.concat(curves, ignore_index=True), targets.pop()
    )


def scaled_lr(record: dict[str, Any], optimizer: str, batch_size: int) -> float:
    """The lr the optimizer's rule gives at `batch_size` (the grid's centre), from the record."""
    entry = record["optimizers"][optimizer]
    ratio = batch_size / record["base_batch"]
    return float(entry["base_lr"]) * (ratio if entry["rule"] == "linear" else math.sqrt(ratio))


def seed_values(trials: pd.DataFrame, target: Target) -> pd.DataFrame:
    """One row per reported seed of each (batch_size, optimizer): its chosen configuration's seeds in the
    stage the summary reports from, with the chosen lr, the status, the test value and the best validation
    value (both NaN unless the seed finished: a diverged seed has no measurement)."""
    rows = []
    for batch_size, table in trials.groupby("batch_size", sort=True):
        summary = analysis.summarize(table.drop(columns="batch_size"), target=target)
        stages = (
            table[STAGE_COLUMN].fillna(SEARCH) if STAGE_COLUMN in table else pd.Series(SEARCH, table.index)
        )
        for _, chosen in summary.dropna(subset=["config_id"]).iterrows():
            seeds = table[
                (table["optimizer"] == chosen["optimizer"])
                & (table["config_id"] == chosen["config_id"])
                & (stages == chosen["reported_from"])
            ]
            for _, seed in seeds.iterrows():
                finished = seed["status"] in FINISHED
                rows.append(
                    {
                        "batch_size": int(batch_size),
                        "optimizer": chosen["optimizer"],
                        "config_id": chosen["config_id"],
                        "reported_from": chosen["reported_from"],
                        "lr": float(chosen["lr"]),
                        "trial_id": seed["trial_id"],
                        "seed": seed["seed"],
                        "status": seed["status"],
                        "test": seed.get(target.test_key, np.nan) if finished else np.nan,
                        "val": seed[target.best_key] if finished else np.nan,
                    }
                )
    columns = [
        "batch_size",
        "optimizer",
        "config_id",
        "reported_from",
        "lr",
        "trial_id",
        "seed",
        "status",
        "test",
        "val",
    ]
    return pd.DataFrame(rows, columns=columns)


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    interval = analysis.t_interval(values, confidence=CONFIDENCE)
    return interval.low, interval.high


def difference_interval(values: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Welch's interval of mean(values) - mean(reference); NaN when either side has fewer than 2 values."""
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    values, reference = values[np.isfinite(values)], reference[np.isfinite(reference)]
    if len(values) < 2 or len(reference) < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0 and np.ptp(reference) == 0:
        difference = float(values.mean() - reference.mean())
        return difference, difference
    result = scipy_stats.ttest_ind(values, reference, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return float(interval.low), float(interval.high)


def reference_of(table: pd.DataFrame, target: Target, optimizer: str | None = None) -> tuple[str, int]:
    """(optimizer, batch size) of the reference: `optimizer` (default SGD when present, else the best mean
    at the smallest batch) at the smallest batch size."""
    smallest = int(table["batch_size"].min())
    first = table[table["batch_size"] == smallest].dropna(subset=["mean"])
    if optimizer is None:
        if REFERENCE_OPTIMIZER in set(first["optimizer"]):
            optimizer = REFERENCE_OPTIMIZER
        elif first.empty:
            raise ValueError("no optimizer has a result at the smallest batch size: there is no reference")
        else:
            ordered = first.sort_values("mean", ascending=target.mode == "min")
            optimizer = str(ordered.iloc[0]["optimizer"])
    if optimizer not in set(first["optimizer"]):
        raise ValueError(
            f"the reference optimizer {optimizer!r} has no result at the smallest batch {smallest}"
        )
    return optimizer, smallest


def accuracy_by_batch(
    seeds: pd.DataFrame,
    target: Target,
    record: dict[str, Any] | None = None,
    *,
    reference: str | None = None,
    metric: str = "test",
) -> pd.DataFrame:
    """One row per (optimizer, batch_size): the chosen lr (and its factor of the rule's lr when `record`
    is given, with whether it lies at the edge of the grid), the seeds' mean of `metric` ("test" or "val")
    with its t-interval over the seeds that finished (`n_seeds`; `n_diverged` diverged), and its difference
    from the reference with Welch's interval."""
    rows = []
    for (optimizer, batch_size), group in seeds.groupby(["optimizer", "batch_size"], sort=True):
        values = group[metric].to_numpy(float)
        values = values[np.isfinite(values)]
        low, high = _t_interval(values) if len(values) else (math.nan, math.nan)
        row: dict[str, Any] = {
            "optimizer": optimizer,
            "batch_size": int(batch_size),
            "lr": float(group["lr"].iloc[0]),
            "reported_from": group["reported_from"].iloc[0],
            "n_seeds": len(values),
            "n_diverged": int((group["status"] == DIVERGED).sum()) if "status" in group else 0,
            "mean": float(values.mean()) if len(values) else math.nan,
            "ci_low": low,
            "ci_high": high,
        }
        if record is not None and optimizer in record["optimizers"]:
            factor = row["lr"] / scaled_lr(record, optimizer, int(batch_size))
            factors = record["lr_factors"]
            row["lr_factor"] = float(f"{factor:.4g}")
            row["at_grid_edge"] = len(factors) >= 3 and (
                math.isclose(factor, min(factors), rel_tol=1e-3)
                or math.isclose(factor, max(factors), rel_tol=1e-3)
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    ref_optimizer, ref_batch = reference_of(table, target, reference)
    ref_values = seeds[(seeds["optimizer"] == ref_optimizer) & (seeds["batch_size"] == ref_batch)][metric]
    ref_mean = float(ref_values.mean())
    table["difference"] = table["mean"] - ref_mean
    intervals = [
        difference_interval(
            seeds[(seeds["optimizer"] == row.optimizer) & (seeds["batch_size"] == row.batch_size)][metric],
            ref_values,
        )
        for row in table.itertuples()
    ]
    table["difference_ci_low"] = [low for low, _ in intervals]
    table["difference_ci_high"] = [high for _, high in intervals]
    table.attrs["reference"] = (ref_optimizer, ref_batch, ref_mean)
    return table.sort_values(["optimizer", "batch_size"]).reset_index(drop=True)


def scaling_limits(
    table: pd.DataFrame, target: Target, *, tolerance: float = DEFAULT_TOLERANCE
) -> pd.DataFrame:
    """Per optimizer: the largest batch size up to which its mean stays within `tolerance` of the reference
    at every batch size from the smallest (`holds_up_to`, None if not even at the smallest), and the first
    that does not (`breaks_at`, None when it never breaks here). `table` needs optimizer, batch_size, mean
    and the reference in ``attrs["reference"]`` (as `accuracy_by_batch` leaves it) or a `difference`
    column. A missing mean (every seed diverged) does not hold."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance {tolerance!r} is invalid: it must be a number >= 0")
    rows = []
    for optimizer, group in table.sort_values("batch_size").groupby("optimizer", sort=True):
        holds_up_to, breaks_at = None, None
        for row in group.itertuples():
            shortfall = -target.sign() * row.difference  # > 0: worse than the reference
            if not (shortfall <= tolerance + 1e-12):
                breaks_at = int(row.batch_size)
                break
            holds_up_to = int(row.batch_size)
        rows.append({"optimizer": optimizer, "holds_up_to": holds_up_to, "breaks_at": breaks_at})
    return pd.DataFrame(rows, columns=["optimizer", "holds_up_to", "breaks_at"], dtype=object)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of one worker: the last, smaller batch included."""
    return math.ceil(n_train / batch_size)


def steps_to_target(
    curves: pd.DataFrame, seeds: pd.DataFrame, target: Target, value: float, n_train: int
) -> pd.DataFrame:
    """One row per reported seed (the trials in `seeds`): the first epoch whose validation metric reaches
    `value` (on the target's side) and the optimizer steps to that epoch's end; NaN epoch and infinite
    steps when it never does."""
    rows = []
    by_trial = {trial_id: group for trial_id, group in curves.groupby("trial_id", sort=False)}
    for seed in seeds.itertuples():
        curve = by_trial.get(seed.trial_id)
        epoch = math.nan
        if curve is not None:
            values = curve.sort_values(EPOCH)
            reached = values[(target.sign() * (values[target.key] - value)) >= 0]
            if not reached.empty:
                epoch = int(reached[EPOCH].iloc[0])
        per_epoch = steps_per_epoch(n_train, int(seed.batch_size))
        rows.append(
            {
                "optimizer": seed.optimizer,
                "batch_size": int(seed.batch_size),
                "trial_id": seed.trial_id,
                "epoch": epoch,
                "steps": epoch * per_epoch if not math.isnan(epoch) else math.inf,
            }
        )
    return pd.DataFrame(rows, columns=["optimizer", "batch_size", "trial_id", "epoch", "steps"])


def steps_summary(steps: pd.DataFrame, base_batch: int) -> pd.DataFrame:
    """Per (optimizer, batch_size): seeds, seeds that reached the target, the median steps (infinite when
    half or more did not reach it), and the scaling efficiency: the median steps at the optimizer's
    smallest batch size times (that batch / B), divided by the median steps at B (1 = perfect scaling:
    B times the batch, 1/B the steps; 0 where the target is not reached)."""
    rows = []
    for optimizer, group in steps.groupby("optimizer", sort=True):
        medians = group.groupby("batch_size")["steps"].median().sort_index()
        first_batch = int(medians.index[0])
        for batch_size, median in medians.items():
            seeds = group[group["batch_size"] == batch_size]
            ideal = medians.iloc[0] * first_batch / batch_size
            rows.append(
                {
                    "optimizer": optimizer,
                    "batch_size": int(batch_size),
                    "n_seeds": len(seeds),
                    "n_reached": int(np.isfinite(seeds["steps"]).sum()),
                    "median_steps": float(median),
                    "efficiency": float(ideal / median)
                    if math.isfinite(median) and math.isfinite(ideal)
                    else 0.0,
                }
            )
    frame = pd.DataFrame(
        rows, columns=["optimizer", "batch_size", "n_seeds", "n_reached", "median_steps", "efficiency"]
    )
    frame.attrs["base_batch"] = base_batch
    return frame


def default_target_value(
    seeds: pd.DataFrame, reference: tuple[str, int], target: Target, tolerance: float
) -> float:
    """The reference's mean best validation value, `tolerance` towards worse: what 'reaching the
    small-batch result' means for the steps."""
    optimizer, batch = reference
    values = seeds[(seeds["optimizer"] == optimizer) & (seeds["batch_size"] == batch)]["val"]
    return float(values.mean()) - target.sign() * tolerance


# ------------------------------------------------------------------------------------- the section


def _batch_axis(ax: Any, batch_sizes: pd.Series) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({int(b) for b in batch_sizes})
    ax.set_xticks(ticks, [str(b) for b in ticks])
    ax.minorticks_off()


def accuracy_figure(table: pd.DataFrame, target: Target, tolerance: float = DEFAULT_TOLERANCE) -> Figure:
    """Each optimizer's test metric (chosen lr) against batch size, with the reference's band."""
    colors = plots.optimizer_colors(sorted(table["optimizer"].unique()))
    figure = Figure(figsize=(6.5, 4.2))
    ax = figure.subplots()
    _, _, ref_mean = table.attrs["reference"]
    ax.axhspan(ref_mean - tolerance, ref_mean + tolerance, color="0.9", label=f"reference ± {tolerance:g}")
    for optimizer, group in table.groupby("optimizer"):
        ax.errorbar(
            group["batch_size"],
            group["mean"],
            yerr=[group["mean"] - group["ci_low"], group["ci_high"] - group["mean"]],
            marker="o",
            capsize=3,
            color=colors[optimizer],
            label=optimizer,
        )
    _batch_axis(ax, table["batch_size"])
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"test {target.metric} (chosen lr, mean and 95% t-interval)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def steps_figure(summary: pd.DataFrame) -> Figure:
    """Median steps to the target against batch size (log-log), with each optimizer's perfect-scaling line
    from its smallest batch; batch sizes that did not reach it as crosses at the top."""
    colors = plots.optimizer_colors(sorted(summary["optimizer"].unique()))
    figure = Figure(figsize=(6.5, 4.2))
    ax = figure.subplots()
    finite = summary["median_steps"].replace(math.inf, np.nan)
    ceiling = (finite.max() if finite.notna().any() else 1.0) * 1.6
    for optimizer, group in summary.groupby("optimizer"):
        reached = group[np.isfinite(group["median_steps"])]
        ax.plot(
            reached["batch_size"],
            reached["median_steps"],
            marker="o",
            color=colors[optimizer],
            label=optimizer,
        )
        missed = group[~np.isfinite(group["median_steps"])]
        ax.scatter(missed["batch_size"], [ceiling] * len(missed), marker="x", color=colors[optimizer])
        if not reached.empty:
            first = reached.iloc[0]
            ideal = first["median_steps"] * first["batch_size"] / group["batch_size"]
            ax.plot(group["batch_size"], ideal, linestyle=":", color=colors[optimizer], alpha=0.6)
    _batch_axis(ax, summary["batch_size"])
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("optimizer steps to the target (median over seeds)")
    ax.set_title("dotted: perfect scaling (steps x 1/B); x at the top: not reached", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return figure


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "not reached"
    return f"{value:.4g}"


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def conclusions(limits: pd.DataFrame, table: pd.DataFrame, record: dict[str, Any]) -> list[str]:
    """The finding in sentences: where each optimizer's scaling breaks, and whether LARS/LAMB carry it
    further than SGD's linear rule."""
    largest = max(record["batch_sizes"])
    by_optimizer = limits.set_index("optimizer")
    lines = []
    for optimizer, limit in by_optimizer.iterrows():
        rule = record["optimizers"].get(optimizer, {}).get("rule", "?")
        if limit["holds_up_to"] is None or (
            isinstance(limit["holds_up_to"], float) and math.isnan(limit["holds_up_to"])
        ):
            lines.append(f"{optimizer} ({rule} rule): below the reference already at the smallest batch.")
        elif limit["breaks_at"] is None or (
            isinstance(limit["breaks_at"], float) and math.isnan(limit["breaks_at"])
        ):
            lines.append(f"{optimizer} ({rule} rule): holds at every batch size run, up to {largest}.")
        else:
            lines.append(
                f"{optimizer} ({rule} rule): holds up to B = {int(limit['holds_up_to'])}, "
                f"breaks at B = {int(limit['breaks_at'])}."
            )
    if "sgd" in by_optimizer.index:
        sgd = _reach(by_optimizer.loc["sgd"], largest)
        for other in ("lars", "lamb"):
            if other in by_optimizer.index:
                reach = _reach(by_optimizer.loc[other], largest)
                verb = "extends" if reach > sgd else ("matches" if reach == sgd else "falls short of")
                lines.append(
                    f"{other.upper()} {verb} SGD's linear scaling here "
                    f"(holds up to {reach or 'none'} vs {sgd or 'none'})."
                )
    edges = table[table.get("at_grid_edge", pd.Series(False, index=table.index)).fillna(False).astype(bool)]
    if not edges.empty:
        cells = ", ".join(
            f"{r.optimizer} at B = {r.batch_size} (x{r.lr_factor:g})" for r in edges.itertuples()
        )
        lines.append(
            "Chosen lr at the edge of the grid, so the best lr there may lie beyond the grid (the rule's lr "
            f"is off by at least the grid's reach): {cells}."
        )
    return lines


def _reach(limit: pd.Series, largest: int) -> int:
    holds = limit["holds_up_to"]
    if holds is None or (isinstance(holds, float) and math.isnan(holds)):
        return 0
    return int(holds)


def write_section(
    root: str | os.PathLike[str], *, tolerance: float = DEFAULT_TOLERANCE, target_value: float | None = None
) -> Path:
    """Write `<root>/report/large_batch.md`, its CSVs and figures; returns the section's path."""
    study = read(root)
    record, target = study.record, study.target
    seeds = seed_values(study.trials, target)
    table = accuracy_by_batch(seeds, target, record)
    if table.empty:
        raise ValueError(f"no finished trial in the large-batch study {root}: nothing to report")
    limits = scaling_limits(table, target, tolerance=tolerance)
    ref_optimizer, ref_batch, _ = table.attrs["reference"]
    value = (
        target_value
        if target_value is not None
        else default_target_value(seeds, (ref_optimizer, ref_batch), target, tolerance)
    )
    steps = steps_to_target(study.curves, seeds, target, value, int(record["n_train"]))
    steps_table = steps_summary(steps, int(record["base_batch"]))
    report = Path(root) / "report"
    report.mkdir(parents=True, exist_ok=True)
    atomic.write_csv(report / TABLE_FILE, table)
    atomic.write_csv(report / STEPS_FILE, steps_table)
    for name, figure in (
        (FIGURES[0], accuracy_figure(table, target, tolerance)),
        (FIGURES[1], steps_figure(steps_table)),
    ):
        atomic.save_figure(report / name, figure)
    text = render_section(record, target, table, limits, steps_table, tolerance, value)
    atomic.write_text(report / SECTION_FILE, text)
    return report / SECTION_FILE


def render_section(
    record: dict[str, Any],
    target: Target,
    table: pd.DataFrame,
    limits: pd.DataFrame,
    steps_table: pd.DataFrame,
    tolerance: float,
    target_value: float,
) -> str:
    ref_optimizer, ref_batch, ref_mean = table.attrs["reference"]
    rules = ", ".join(
        f"{name} {entry['rule']} from lr {entry['base_lr']:g}" for name, entry in record["optimizers"].items()
    )
    accuracy = table.assign(
        **{
            f"test {target.metric}": [
                f"{_number(r.mean)} [{_number(r.ci_low)}, {_number(r.ci_high)}]" for r in table.itertuples()
            ],
            "vs reference": [
                f"{r.difference:+.4f} [{_number(r.difference_ci_low)}, {_number(r.difference_ci_high)}]"
                for r in table.itertuples()
            ],
        }
    )
    columns = [
        "optimizer",
        "batch_size",
        "lr",
        *(["lr_factor"] if "lr_factor" in table else []),
        "n_seeds",
        "n_diverged",
        "reported_from",
        f"test {target.metric}",
        "vs reference",
    ]
    steps_view = steps_table.assign(
        median_steps=[_number(v) for v in steps_table["median_steps"]],
        efficiency=[f"{v:.2f}" for v in steps_table["efficiency"]],
    )
    limits_view = limits.assign(
        holds_up_to=[_number(v) if v is not None else "none" for v in limits["holds_up_to"]],
        breaks_at=[_number(v) if v is not None else "never here" for v in limits["breaks_at"]],
    )
    lines = [
        "# Large-batch scaling (Goyal et al. 2017; LARS, You et al. 2017; LAMB, You et al. 2019)",
        "",
        f"Task `{record['task']}`, {record['n_train']} training examples, {record['max_epochs']} epochs "
        f"at every batch size (so B = {max(record['batch_sizes'])} trains "
        f"{record['max_epochs'] * steps_per_epoch(record['n_train'], max(record['batch_sizes']))} steps). "
        f"lr rules from B0 = {record['base_batch']}: {rules}; each optimizer's lr a grid of factors "
        f"{', '.join(f'{f:g}' for f in record['lr_factors'])} of its rule's lr, warmup over the first 10% of "
        "the steps then cosine decay.",
        "",
        f"Reference: {ref_optimizer} at B = {ref_batch}, test {target.metric} {ref_mean:.4f}. Scaling holds "
        f"at a batch size while the mean is within {tolerance:g} of it.",
        "",
        "## Accuracy against batch size",
        "",
        _markdown_table(accuracy[columns]),
        "",
        f"![Accuracy against batch size]({FIGURES[0]})",
        "",
        "## Where scaling breaks",
        "",
        _markdown_table(limits_view),
        "",
        *[f"- {line}" for line in conclusions(limits, table, record)],
        "",
        f"## Steps to the target (val {target.metric} {target_value:.4f})",
        "",
        _markdown_table(steps_view),
        "",
        f"![Steps to the target]({FIGURES[1]})",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m optsweep.analysis.large_batch STUDY_DIR", file=sys.stderr)
        return 2
    try:
        print(write_section(argv[0]))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
