"""Render report.md from the computed tables (text only; computing and writing happen elsewhere)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from optsweep.analysis import metric_text
from optsweep.analysis.binning import format_value
from optsweep.analysis.stats import CONFIDENCE, expected_column
from optsweep.analysis.summary import (
    REPORTED_FROM,
    hyperparameter_columns,
    stage_rows,
    test_interval_columns,
    test_mean_column,
)
from optsweep.vocabulary import CONFIRM, DEFAULT_TARGET, SEARCH, STAGE_COLUMN, STATUSES, Target

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
        "## Verdict\n\n" + content.verdict + "\n\n" + _provenance(content.summary),
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


def _provenance(summary: pd.DataFrame) -> str:
    """Where the verdict's numbers come from, in one sentence."""
    stages = set(summary[REPORTED_FROM]) if REPORTED_FROM in summary and len(summary) else {SEARCH}
    if stages == {CONFIRM}:
        return (
            "*These numbers come from fresh confirmation seeds of each optimizer's chosen configuration "
            "(the search stage chose it, the confirmation reports it), so they are not selection-biased.*"
        )
    if stages == {SEARCH}:
        return (
            "*These numbers come from the search seeds that also chose each configuration (no confirmation "
            "stage), so they are selection-biased (the winner's curse): see the caveats.*"
        )
    return (
        "*Some optimizers are reported from confirmation seeds and some from the search seeds (column "
        "'from' below): the search numbers are selection-biased, so the comparison is not like for like.*"
    )


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
    staged = STAGE_COLUMN in trials and bool((trials[STAGE_COLUMN] == CONFIRM).any())
    if staged:
        headers.insert(1, "stage")
    rows = []
    for optimizer, group in trials.groupby("optimizer", sort=True):
        for stage in (SEARCH, CONFIRM) if staged else (SEARCH,):
            rows_of_stage = stage_rows(group, stage)
            if rows_of_stage.empty:
                continue
            per_config = rows_of_stage.groupby("config_id").size()
            low, high = per_config.min(), per_config.max()
            seeds = f"{low}" if low == high else f"{low}–{high}"
            counts = [int((rows_of_stage["status"] == s).sum()) for s in STATUSES]
            row = [optimizer, len(rows_of_stage), len(per_config), seeds, *counts]
            rows.append([optimizer, stage, *row[1:]] if staged else row)
    return "\n".join(facts) + "\n\n" + markdown_table(headers, rows)


def _best_table(trials: pd.DataFrame, summary: pd.DataFrame, target: Target) -> str:
    hparams = hyperparameter_columns(trials)
    val, test = metric_text.short_val(target), metric_text.short_test(target)
    test_mean = test_mean_column(target)
    test_low, test_high = test_interval_columns(target)
    stages = summary[REPORTED_FROM] if REPORTED_FROM in summary else pd.Series(SEARCH, index=summary.index)
    confirmed = bool((stages == CONFIRM).any())
    headers = ["optimizer", "configuration", "hyperparameters", "seeds", "from", f"{val} (mean ± std)"]
    headers += ["95% CI", f"{test} (mean)", f"{test} 95% CI"]
    headers += [f"search {val} (mean, biased)"] if confirmed else []
    places = metric_text.decimals(summary["mean"])
    test_places = metric_text.decimals(summary[test_mean])

    def num(value: float, digits: int = places) -> str:
        return "n/a" if _missing(value) else f"{value:.{digits}f}"

    def interval(low: float, high: float, n: int, digits: int = places) -> str:
        if n < 2:
            return f"n/a ({n} seed{'s' * (n != 1)})"
        return "n/a" if _missing(low) else f"[{num(low, digits)}, {num(high, digits)}]"

    rows = []
    for (_, row), stage in zip(summary.iterrows(), stages, strict=True):
        if _missing(row["config_id"]):
            rows.append([row["optimizer"], "none finished", "", 0, stage, "", "", "", "", *[""] * confirmed])
            continue
        settings = ", ".join(f"{h}={format_value(row[h])}" for h in hparams if not _missing(row[h]))
        mean, std, n = row["mean"], row["std"], int(row["n_seeds"])
        spread = f"{num(mean)} ± {num(std)}" if n > 1 else f"{num(mean)} ({n} seed{'s' * (n != 1)})"
        cells = [row["optimizer"], row["config_id"], settings, n, stage, spread]
        cells += [interval(row["ci_low"], row["ci_high"], n), num(row[test_mean], test_places)]
        cells += [interval(row.get(test_low), row.get(test_high), n, test_places)]
        cells += [num(row.get("search_mean"))] if confirmed else []
        rows.append(cells)
    return (
        markdown_table(headers, rows) + "\n\n" + _best_note(target, confirmed, bool((stages == SEARCH).any()))
    )


def _best_note(target: Target, confirmed: bool, searched: bool) -> str:
    val, test = metric_text.short_val(target), metric_text.short_test(target)
    stages = []
    if confirmed:
        stages.append(
            "`confirm`: over fresh confirmation seeds of the configuration the search chose (unbiased)"
        )
    if searched:
        stages.append("`search`: over the search seeds that chose it (selection-biased: the winner's curse)")
    return (
        f"Selection rule: the validation metric picks the epoch. {val}: each seed's best "
        f"{metric_text.val_words(target)} over its epochs; {test}: read at that same epoch (also for seeds "
        "stopped early). Means over the seeds with 95% t-intervals; from: the stage the row's seeds come "
        f"from ({'; '.join(stages)}). All trials are in `trials.csv`, this table in `summary.csv`."
    )


def _figures(figures: list[tuple[str, str, str]]) -> str:
    if not figures:
        return "No figures yet: no trial has finished."
    return "\n\n".join(f"![{alt}]({name})\n\n*{caption}*" for name, alt, caption in figures)


def _budget_table(budget: pd.DataFrame, target: Target) -> str:
    moves = "rises" if target.mode == "max" else "falls"
    intro = (
        f"Expected best {metric_text.val_words(target)} after trying k of the search's configurations at "
        f'random (Dodge et al. 2019, "Show Your Work"): a curve that {moves} quickly means an optimizer '
        "that is easy to tune. ± is the spread of the best of k draws (the standard deviation of what the "
        "best of k random configurations reaches), not an uncertainty of the expected value. The curve "
        "assumes random draws; see the caveats when the search was not random."
    )
    if budget.empty:
        return intro + "\n\nNo configuration has a result yet."
    wide = budget.pivot(index="k", columns="optimizer", values=expected_column(target.mode))
    spread = budget.pivot(index="k", columns="optimizer", values="std")
    places = metric_text.decimals(wide.to_numpy().ravel())
    ks = [k for k in BUDGET_KS if k <= wide.index.max()]
    ks += [int(n) for n in budget.groupby("optimizer")["n_configs"].first() if n not in ks]
    rows = []
    for k in sorted(set(ks)):
        cells = [
            ""
            if k not in wide.index or _missing(wide.at[k, o])
            else f"{wide.at[k, o]:.{places}f} ± {spread.at[k, o]:.{places}f}"
            for o in wide.columns
        ]
        rows.append([k, *cells])
    return intro + "\n\n" + markdown_table(["k", *wide.columns], rows)


def _spent_table(spent: pd.DataFrame | None, imbalances: list[str]) -> str:
    intro = (
        "What each optimizer actually used: trial-epochs trained (in all, and in the search and the "
        "confirmation stage), the trials' wall time, and the device time they reserved (time x workers x "
        "CPUs or GPUs per worker)."
    )
    if spent is None or spent.empty:
        return intro + "\n\nNothing has run yet."
    rows = [
        [
            r.optimizer,
            int(r.trials),
            int(r.trial_epochs),
            int(getattr(r, "search_trial_epochs", r.trial_epochs)),
            int(getattr(r, "confirm_trial_epochs", 0)),
            f"{r.wall_time_s:,.1f}",
            f"{r.cpu_s:,.1f}",
            f"{r.gpu_s:,.1f}",
        ]
        for r in spent.itertuples()
    ]
    headers = ["optimizer", "trials", "trial-epochs", "search", "confirmation", "trial time (s)", "CPU s"]
    table = markdown_table([*headers, "GPU s"], rows)
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
        "Selection rule: the validation metric picks the epoch; each seed's test metric is read at the "
        "epoch of its best validation value.",
        f"Best configuration (search stage): {metric_text.best_word(target)} mean {measure} over finished "
        "search seeds (completed or stopped early); configurations with a diverged seed never win, and only "
        "configurations with at least the same minimum number of finished seeds compete, for every "
        "optimizer alike.",
        "Stages: the search chooses each optimizer's configuration; a confirmation stage retrains it on "
        "fresh seeds, and the headline numbers come from those when there are any (column `reported_from` "
        "of summary.csv), else from the search seeds (selection-biased).",
        f"Interval: {level}% Student's t interval of the mean over seeds (n - 1 degrees of freedom), for the "
        "validation and the test metric alike.",
        f"Verdict: each pair's difference of means with its {level}% Welch interval and Welch's t-test; the "
        "p-values are Holm-adjusted across all pairs tested, and a pair differs when its adjusted p is "
        f"below {1 - CONFIDENCE:.2f}. A side with a single seed is not tested.",
        f"Tuning budget: each search configuration scores the mean over its seeds ({diverged}); "
        f"the curve is the expected {extreme} of k scores drawn with replacement, ± the standard deviation "
        "of that best of k (its spread from one set of k draws to the next).",
    ]
    return "\n".join(f"- {line}" for line in lines)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
