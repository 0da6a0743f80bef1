"""What a reader must know before trusting the numbers, derived from the data itself."""

from __future__ import annotations

import math

import pandas as pd

from analysis import metric_text
from analysis.summary import configurations, diverged_score
from analysis.target import resolve
from analysis.verdict import FEW_SEEDS
from optsweep.vocabulary import DIVERGED, ERROR, INCOMPLETE, STOPPED_EARLY, Target

_SETTINGS_TO_MATCH = ("dataset", "model", "max_epochs")


def caveats(trials: pd.DataFrame, summary: pd.DataFrame, *, target: Target | None = None) -> list[str]:
    """Plain-language caveats for this experiment (always at least the selection-bias one), in
    terms of the target metric (by default the one `trials` carries)."""
    target = resolve(trials, target)
    notes: list[str] = []
    notes += _seed_caveats(summary)
    notes.append(
        f"The best configuration is picked by the same {metric_text.val_words(target)} that is reported, "
        "so its mean is optimistic (the winner's curse), more so for the optimizer that tried more "
        f"configurations. {metric_text.test_words(target).capitalize()} played no part in the choice "
        "and is the fairer number."
    )
    notes.append(
        "Non-overlapping 95% intervals is a conservative test: overlapping intervals do not show "
        "that the optimizers are equal, only that this experiment cannot tell them apart."
    )
    notes += _status_caveats(trials, target)
    notes += _fairness_caveats(trials, summary, target)
    return notes


def _seed_caveats(summary: pd.DataFrame) -> list[str]:
    with_result = summary[summary["n_seeds"] > 0]
    if with_result.empty:
        return []
    notes = []
    single = with_result[with_result["n_seeds"] == 1]["optimizer"].tolist()
    if single:
        notes.append(
            f"The chosen configuration of {', '.join(single)} has a single finished seed: its interval "
            "is a point and says nothing about seed-to-seed variation, so no claim of significance "
            "can rest on it."
        )
    most = int(with_result["n_seeds"].max())
    if 1 < most < FEW_SEEDS:
        notes.append(
            f"At most {most} seeds per configuration: percentile bootstrap intervals from so few values "
            "are narrower than the true uncertainty; treat a 'beats' with care and confirm it with "
            "more seeds."
        )
    return notes


def _status_caveats(trials: pd.DataFrame, target: Target) -> list[str]:
    notes = []
    stopped = trials[trials["status"] == STOPPED_EARLY]
    if len(stopped):
        notes.append(
            f"{len(stopped)} trial(s) were stopped early by the scheduler (ASHA). They count with the "
            f"{metric_text.words(target)} they had reached, so the learning-rate and tuning-budget views "
            "describe random search with early stopping, not full training of every configuration."
        )
    diverged = trials[trials["status"] == DIVERGED]
    if len(diverged):
        score = diverged_score(target, trials)
        if math.isnan(score):
            scored = "has no score (no seed finished)"
        elif target.mode == "max" and score == 0:
            scored = "scores 0"
        else:
            value = metric_text.fmt(score, metric_text.decimals([score]))
            scored = f"scores {value}, the worst value any finished seed reached"
        notes.append(
            f"{len(diverged)} trial(s) diverged ({_per_optimizer(diverged)}). A configuration with a "
            f"diverged seed is never chosen as best, and in the tuning-budget view a diverged run {scored}."
        )
    errors = trials[trials["status"] == ERROR]
    if len(errors):
        messages = errors["error_message"].dropna().unique().tolist()[:3]
        shown = "; ".join(f"`{m}`" for m in messages) if messages else "no error.txt"
        notes.append(
            f"{len(errors)} trial(s) failed with an error ({_per_optimizer(errors)}) and are left out: "
            f"{shown}."
        )
    unfinished = trials[trials["status"] == INCOMPLETE]
    if len(unfinished):
        notes.append(
            f"The experiment is unfinished: {len(unfinished)} trial(s) were pending or running when it "
            f"stopped ({_per_optimizer(unfinished)}). They are listed in trials.csv but not used; "
            "rerun the report when the sweep has finished."
        )
    return notes


def _fairness_caveats(trials: pd.DataFrame, summary: pd.DataFrame, target: Target) -> list[str]:
    notes = []
    configs = configurations(trials, target=target)
    set_aside = configs[configs["candidate"] & ~configs["eligible"]]
    if len(set_aside) and len(summary):
        min_seeds = int(summary["min_seeds"].iloc[0])
        notes.append(
            f"Only configurations with at least {min_seeds} finished seeds competed for best (the same "
            f"threshold for every optimizer); {len(set_aside)} configuration(s) with fewer were set aside."
        )
    budgets = summary.set_index("optimizer")["n_configs"]
    if budgets.nunique() > 1:
        listed = ", ".join(f"{o}: {n}" for o, n in budgets.sort_index().items())
        notes.append(
            f"The optimizers had different tuning budgets ({listed} configurations); compare them in "
            "the tuning-budget view at equal k."
        )
    for column in _SETTINGS_TO_MATCH:
        if column in trials and trials.groupby("optimizer")[column].first().nunique() > 1:
            notes.append(
                f"The optimizers were not run with the same {column}; the comparison is not like for like."
            )
    return notes


def _per_optimizer(trials: pd.DataFrame) -> str:
    counts = trials.groupby("optimizer").size()
    return ", ".join(f"{optimizer}: {n}" for optimizer, n in counts.items())
