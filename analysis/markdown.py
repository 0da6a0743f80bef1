"""Render report.md from the computed tables (text only; computing and writing happen elsewhere)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from analysis.binning import format_value
from analysis.stats import CONFIDENCE, N_RESAMPLES
from analysis.summary import hyperparameter_columns

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


def render(content: ReportContent) -> str:
    sections = [
        f"# {content.title}",
        "## Verdict\n\n" + content.verdict,
        "## What was run\n\n" + _what_was_run(content.trials),
        "## Best configuration per optimizer\n\n" + _best_table(content.trials, content.summary),
        "## Figures\n\n" + _figures(content.figures),
        "## Tuning budget\n\n" + _budget_table(content.budget),
        "## Caveats\n\n" + "\n".join(f"- {note}" for note in content.caveats + content.data_notes),
        "## Method\n\n" + _method(),
    ]
    return "\n\n".join(sections) + "\n"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; '|' inside cells is escaped."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])


def _what_was_run(trials: pd.DataFrame) -> str:
    facts = []
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
        counts = [
            int((group["status"] == s).sum())
            for s in ("completed", "stopped_early", "diverged", "error", "incomplete")
        ]
        rows.append([optimizer, len(group), len(per_config), seeds, *counts])
    return "\n".join(facts) + "\n\n" + markdown_table(headers, rows)


def _best_table(trials: pd.DataFrame, summary: pd.DataFrame) -> str:
    hparams = hyperparameter_columns(trials)
    headers = [
        "optimizer",
        "configuration",
        "hyperparameters",
        "seeds",
        "val acc (mean ± std)",
        "95% CI",
        "test acc (mean)",
    ]
    rows = []
    for _, row in summary.iterrows():
        if _missing(row["config_id"]):
            rows.append([row["optimizer"], "none finished", "", 0, "", "", ""])
            continue
        settings = ", ".join(f"{h}={format_value(row[h])}" for h in hparams if not _missing(row[h]))
        mean, std, n = row["mean"], row["std"], int(row["n_seeds"])
        spread = f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f} (1 seed)"
        interval = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if n > 1 else "n/a (1 seed)"
        test = "n/a" if _missing(row["test_acc_mean"]) else f"{row['test_acc_mean']:.3f}"
        rows.append([row["optimizer"], row["config_id"], settings, n, spread, interval, test])
    note = (
        "val acc: each seed's best validation accuracy over its epochs, averaged over the seeds of the "
        "configuration. test acc: measured at each seed's last epoch (also for seeds stopped early), "
        "averaged over the seeds. All trials are in `trials.csv`, this table in `summary.csv`."
    )
    return markdown_table(headers, rows) + "\n\n" + note


def _figures(figures: list[tuple[str, str, str]]) -> str:
    if not figures:
        return "No figures yet: no trial has finished."
    return "\n\n".join(f"![{alt}]({name})\n\n*{caption}*" for name, alt, caption in figures)


def _budget_table(budget: pd.DataFrame) -> str:
    intro = (
        "Expected best validation accuracy after trying k configurations at random (Dodge et al. 2019, "
        '"Show Your Work"): a curve that rises quickly means an optimizer that is easy to tune.'
    )
    if budget.empty:
        return intro + "\n\nNo configuration has a result yet."
    wide = budget.pivot(index="k", columns="optimizer", values="expected_max")
    ks = [k for k in BUDGET_KS if k <= wide.index.max()]
    ks += [int(n) for n in budget.groupby("optimizer")["n_configs"].first() if n not in ks]
    rows = []
    for k in sorted(set(ks)):
        cells = [
            "" if k not in wide.index or _missing(wide.at[k, o]) else f"{wide.at[k, o]:.3f}"
            for o in wide.columns
        ]
        rows.append([k, *cells])
    return intro + "\n\n" + markdown_table(["k", *wide.columns], rows)


def _method() -> str:
    level = round(CONFIDENCE * 100)
    lines = [
        "Status of each trial: `completed` (all epochs), `stopped_early` (by the scheduler), "
        "`diverged`, `error`, `incomplete` (not finished when the report was made).",
        "Configuration: one optimizer with one set of hyperparameter values; its seeds are separate trials.",
        "Best configuration: highest mean best-validation-accuracy over finished seeds (completed or "
        "stopped early); configurations with a diverged seed never win, and only configurations with at "
        "least the same minimum number of finished seeds compete, for every optimizer alike.",
        f"Interval: {level}% percentile bootstrap of the mean over seeds, {N_RESAMPLES:,} resamples, "
        "fixed random seed (rerunning the report gives the same numbers).",
        f"Verdict: two optimizers differ only if their {level}% intervals do not overlap.",
        "Tuning budget: each configuration scores the mean over its seeds (a diverged seed scores 0); "
        "the curve is the expected maximum of k scores drawn with replacement.",
    ]
    return "\n".join(f"- {line}" for line in lines)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
