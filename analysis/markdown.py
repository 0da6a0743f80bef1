"""Render report.md from the computed tables (text only; computing and writing happen elsewhere)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from analysis import metric_text
from analysis.binning import format_value
from analysis.stats import CONFIDENCE, N_RESAMPLES, expected_column
from analysis.summary import hyperparameter_columns, test_mean_column
from optsweep.vocabulary import DEFAULT_TARGET, STATUSES, Target

BUDGET_KS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500)


@dataclass
class ReportContent:
    """Everything report.md shows."""

    title: str
    trials: pd.DataFrame
    summary: pd.DataFrame
    budget: pd.DataFrame
    verdict: str
    caveats: list[str]
    figures: list[tuple[str, str, str]]  # (PNG file name, alt text, one-line caption)
    data_notes: list[str] = field(default_factory=list)
    target: Target = DEFAULT_TARGET
    spent: pd.DataFrame | None = None  # analysis.spent.spent
    imbalances: list[str] = field(default_factory=list)
    rungs: pd.DataFrame | None = None  # analysis.spent.rungs_reached


def render(content: ReportContent) -> str:
    target = content.target
    sections = [
        f"# {content.title}",
        "## Verdict\n\n" + content.verdict,
        "## What was run\n\n" + _what_was_run(content.trials, target),
        "## Best configuration per optimizer\n\n" + _best_table(content.trials, content.summary, target),
        "## Figures\n\n" + _figures(content.figures),
        "## Tuning budget\n\n" + _budget_table(content.budget, target),
        "## Budget spent\n\n" + _spent_table(content.spent, content.imbalances),
        "## Early stopping: configurations per rung\n\n" + _rungs_table(content.rungs),
        "## Caveats\n\n" + "\n".join(f"- {note}" for note in content.caveats + content.data_notes),
        "## Method\n\n" + _method(target),
    ]
    return "\n\n".join(sections) + "\n"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; '|' inside cells is escaped."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])


def _what_was_run(trials: pd.DataFrame, target: Target) -> str:
    facts = []
    if target != DEFAULT_TARGET:  # reports of experiments from before targets read as they always did
        facts.append(f"- Target metric: {metric_text.val_words(target)} ({metric_text.direction(target)})")
    named = (("dataset", "Dataset"), ("model", "Model"), ("max_epochs", "Epochs per trial (max)"))
    for column, name in named:
        if column in trials:
            values = trials[column].dropna().astype(str).unique()
            facts.append(f"- {name}: {', '.join(sorted(values)) or 'not recorded'}")
    headers = [
        "optimizer",
        "trials",
        "configurations",
        "seeds per configuration",
        "completed",
        "stopped early",
        "diverged",
        "error",
        "incomplete",
    ]
    rows = []
    for optimizer, group in trials.groupby("optimizer", sort=True):
        per_config = group.groupby("config_id").size()
        seeds = (
            f"{per_config.min()}"
            if per_config.min() == per_config.max()
            else (f"{per_config.min()}–{per_config.max()}")
        )
        counts = [int((group["status"] == s).sum()) for s in STATUSES]
        rows.append([optimizer, len(group), len(per_config), seeds, *counts])
    return "\n".join(facts) + "\n\n" + markdown_table(headers, rows)


def _best_table(trials: pd.DataFrame, summary: pd.DataFrame, target: Target) -> str:
    hparams = hyperparameter_columns(trials)
    val, test = metric_text.short_val(target), metric_text.short_test(target)
    headers = [
        "optimizer",
        "configuration",
        "hyperparameters",
        "seeds",
        f"{val} (mean ± std)",
        "95% CI",
        f"{test} (mean)",
    ]
    test_mean = test_mean_column(target)
    places = metric_text.decimals(summary["mean"])
    test_places = metric_text.decimals(summary[test_mean])

    def num(value: float, digits: int = places) -> str:
        return f"{value:.{digits}f}"

    rows = []
    for _, row in summary.iterrows():
        if _missing(row["config_id"]):
            rows.append([row["optimizer"], "none finished", "", 0, "", "", ""])
            continue
        settings = ", ".join(f"{h}={format_value(row[h])}" for h in hparams if not _missing(row[h]))
        mean, std, n = row["mean"], row["std"], int(row["n_seeds"])
        spread = f"{num(mean)} ± {num(std)}" if n > 1 else f"{num(mean)} (1 seed)"
        interval = f"[{num(row['ci_low'])}, {num(row['ci_high'])}]" if n > 1 else "n/a (1 seed)"
        tested = "n/a" if _missing(row[test_mean]) else num(row[test_mean], test_places)
        rows.append([row["optimizer"], row["config_id"], settings, n, spread, interval, tested])
    note = (
        f"{val}: each seed's best {metric_text.val_words(target)} over its epochs, averaged over the seeds "
        f"of the configuration. {test}: measured at each seed's last epoch (also for seeds stopped early), "
        "averaged over the seeds. All trials are in `trials.csv`, this table in `summary.csv`."
    )
    return markdown_table(headers, rows) + "\n\n" + note


def _figures(figures: list[tuple[str, str, str]]) -> str:
    if not figures:
        return "No figures yet: no trial has finished."
    return "\n\n".join(f"![{alt}]({name})\n\n*{caption}*" for name, alt, caption in figures)


def _budget_table(budget: pd.DataFrame, target: Target) -> str:
    moves = "rises" if target.mode == "max" else "falls"
    intro = (
        f"Expected best {metric_text.val_words(target)} after trying k configurations at random "
        f'(Dodge et al. 2019, "Show Your Work"): a curve that {moves} quickly means an optimizer that is '
        "easy to tune."
    )
    if budget.empty:
        return intro + "\n\nNo configuration has a result yet."
    wide = budget.pivot(index="k", columns="optimizer", values=expected_column(target.mode))
    places = metric_text.decimals(wide.to_numpy().ravel())
    ks = [k for k in BUDGET_KS if k <= wide.index.max()]
    ks += [int(n) for n in budget.groupby("optimizer")["n_configs"].first() if n not in ks]
    rows = []
    for k in sorted(set(ks)):
        cells = [
            "" if k not in wide.index or _missing(wide.at[k, o]) else f"{wide.at[k, o]:.{places}f}"
            for o in wide.columns
        ]
        rows.append([k, *cells])
    return intro + "\n\n" + markdown_table(["k", *wide.columns], rows)


def _spent_table(spent: pd.DataFrame | None, imbalances: list[str]) -> str:
    intro = (
        "What each optimizer actually used: trial-epochs trained, the trials' wall time, and the device "
        "time they reserved (time x workers x CPUs or GPUs per worker)."
    )
    if spent is None or spent.empty:
        return intro + "\n\nNothing has run yet."
    rows = [
        [
            r.optimizer,
            int(r.trials),
            int(r.trial_epochs),
            f"{r.wall_time_s:,.1f}",
            f"{r.cpu_s:,.1f}",
            f"{r.gpu_s:,.1f}",
        ]
        for r in spent.itertuples()
    ]
    table = markdown_table(["optimizer", "trials", "trial-epochs", "trial time (s)", "CPU s", "GPU s"], rows)
    if imbalances:
        verdict = "**Unequal budgets** (more than 5% from the mean): " + "; ".join(imbalances) + "."
    else:
        verdict = "Every optimizer spent the same budget within 5%."
    return f"{intro}\n\n{table}\n\n{verdict}"


def _rungs_table(rungs: pd.DataFrame | None) -> str:
    if rungs is None or rungs.empty:
        return "No early stopping: every configuration trained the full budget."
    intro = (
        "Configurations judged at each rung (epoch) and how many went on; all seeds of a configuration "
        "go on or stop together, on their mean."
    )
    rows = [[r.optimizer, int(r.rung), int(r.judged), int(r.went_on)] for r in rungs.itertuples()]
    return intro + "\n\n" + markdown_table(["optimizer", "rung (epoch)", "judged", "went on"], rows)


def _method(target: Target) -> str:
    level = round(CONFIDENCE * 100)
    measure = "best-" + metric_text.val_words(target).replace(" ", "-")
    if target.mode == "max":
        diverged, extreme = "a diverged seed scores 0", "maximum"
    else:
        diverged, extreme = "a diverged seed scores the worst value any finished seed reached", "minimum"
    lines = [
        "Status of each trial: `completed` (all epochs), `stopped_early` (by the scheduler), "
        "`diverged`, `error`, `incomplete` (not finished when the report was made).",
        "Configuration: one optimizer with one set of hyperparameter values; its seeds are separate trials.",
        f"Best configuration: {metric_text.best_word(target)} mean {measure} over finished seeds "
        "(completed or stopped early); configurations with a diverged seed never win, and only "
        "configurations with at least the same minimum number of finished seeds compete, for every "
        "optimizer alike.",
        f"Interval: {level}% percentile bootstrap of the mean over seeds, {N_RESAMPLES:,} resamples, "
        "fixed random seed (rerunning the report gives the same numbers).",
        f"Verdict: two optimizers differ only if their {level}% intervals do not overlap.",
        f"Tuning budget: each configuration scores the mean over its seeds ({diverged}); "
        f"the curve is the expected {extreme} of k scores drawn with replacement.",
    ]
    return "\n".join(f"- {line}" for line in lines)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
