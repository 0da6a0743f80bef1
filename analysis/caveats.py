"""What a reader must know before trusting the numbers, derived from the data itself."""

from __future__ import annotations

import math

import pandas as pd

from optsweep.analysis import metric_text
from optsweep.analysis.loading import SEARCH_ATTR
from optsweep.analysis.stats import detectable_difference
from optsweep.analysis.summary import REPORTED_FROM, configurations, diverged_score, stage_rows
from optsweep.analysis.target import resolve
from optsweep.vocabulary import (
    CONFIRM,
    DIVERGED,
    DIVERGED_REASON,
    ERROR,
    FINISHED,
    INCOMPLETE,
    SEARCH,
    STOPPED_EARLY,
    VAL_PREFIX,
    Target,
)

RANDOM_SEARCH = "random"

_SETTINGS_TO_MATCH = ("dataset", "model", "max_epochs")


def caveats(
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    target: Target | None = None,
    search: str | None = None,
) -> list[str]:
    """Plain-language caveats for this experiment (always at least one on selection: biased numbers
    without a confirmation stage, or where the unbiased ones come from), in terms of the target metric
    (by default the one `trials` carries). `search`: the study's search algorithm (default: the one
    `trials` carries from its study record; None when unrecorded)."""
    target = resolve(trials, target)
    search = trials.attrs.get(SEARCH_ATTR) if search is None else search
    notes: list[str] = []
    notes += _seed_caveats(summary)
    notes += _selection_caveats(trials, summary, target)
    notes += _comparison_caveats(summary, target)
    notes += _search_caveats(search)
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
    return notes


def _selection_caveats(trials: pd.DataFrame, summary: pd.DataFrame, target: Target) -> list[str]:
    val, test = metric_text.val_words(target), metric_text.test_words(target)
    stages = summary[REPORTED_FROM] if REPORTED_FROM in summary else pd.Series(SEARCH, index=summary.index)
    from_search = summary.loc[stages == SEARCH, "optimizer"].tolist()
    confirmed = summary[(stages == CONFIRM) & (summary["n_seeds"] > 0)]
    notes = []
    if from_search:
        which = "" if len(from_search) == len(summary) else f" of {_join(from_search)}"
        notes.append(
            f"The numbers{which} are selection-biased (the winner's curse): there was no confirmation "
            f"stage, so each configuration was chosen by its mean {val} over the search seeds and the same "
            "seeds are reported. The chosen mean sits above the configuration's true mean (by 0.35-0.87 seed "
            "standard deviations in simulations of 24 configurations x 5 seeds, the more the closer the "
            "configurations are) and its interval covers the "
            f"true mean less often than it says; {test}, read at the epoch the validation chose, is less "
            "biased but comes from the same seeds. Confirm the choice on fresh seeds for unbiased numbers."
        )
    if len(confirmed):
        gap = (confirmed["search_mean"] - confirmed["mean"]).dropna()
        fresh = ", ".join(f"{r.optimizer}: {int(r.n_seeds)}" for r in confirmed.itertuples())
        note = (
            f"The headline numbers come from fresh confirmation seeds ({fresh}) of the configuration each "
            "optimizer's search chose: they played no part in the choice, so the winner's curse does not "
            "raise them."
        )
        if len(gap):
            places = metric_text.decimals(confirmed["mean"])
            mean_gap = target.sign() * gap.mean()
            note += (
                f" The search means of the same configurations (search_mean) are selection-biased: they are "
                f"{abs(mean_gap):.{places}f} {'better' if mean_gap > 0 else 'worse'} on average here."
            )
        notes.append(note)
    if from_search and len(confirmed):
        notes.append(
            f"{_join(from_search)} {'has' if len(from_search) == 1 else 'have'} no confirmation trials, so "
            "the comparison sets selection-biased search numbers against unbiased confirmation numbers: "
            "rerun the report when the confirmation stage has finished."
        )
    confirm = stage_rows(trials, CONFIRM)
    lost = confirm[~confirm["status"].isin(FINISHED)]
    if len(lost):
        notes.append(
            f"{len(lost)} confirmation trial(s) did not finish ({_per_optimizer(lost)}; statuses "
            f"{', '.join(sorted(lost['status'].astype(str).unique()))}): the confirmation means are over "
            "the seeds that finished, and a chosen configuration that diverges on fresh seeds is less safe "
            "than its search suggested."
        )
    return notes


def _comparison_caveats(summary: pd.DataFrame, target: Target) -> list[str]:
    tested = summary[(summary["n_seeds"] >= 2) & summary["std"].notna()]
    if len(tested) < 2:
        return []
    pairs = len(tested) * (len(tested) - 1) // 2
    fewest = int(tested["n_seeds"].min())
    detectable = detectable_difference(fewest, pairs)
    spread = math.sqrt(float((tested["std"] ** 2).mean()))
    places = metric_text.decimals(tested["mean"])
    family = (
        f"with Holm's correction across the {pairs} pairs (it keeps the chance of any false 'beats' at or "
        "below 5%, at the price of power)"
        if pairs > 1
        else "with Welch's t-test"
    )
    return [
        f"Each difference is tested {family}. With {fewest} seeds a side a true difference must be about "
        f"{detectable:.1f} seed standard deviations (about {detectable * spread:.{places}f} "
        f"{metric_text.words(target)} here) to be found 80% of the time: 'no significant difference' does "
        "not rule out a smaller one, and more seeds narrow it. The intervals and tests assume seed-to-seed "
        "variation that is roughly normal; with few seeds that cannot be checked."
    ]


def _search_caveats(search: str | None) -> list[str]:
    if search is None or search == RANDOM_SEARCH:
        return []
    return [
        "The tuning-budget view assumes the configurations were random draws from the search space; this "
        f"study's search was {search}, which proposes each configuration from the results before it, so "
        "its curve is not the expected best of k random configurations (read it as a summary of the "
        "configurations tried, not as how easy each optimizer is to tune)."
    ]


def _status_caveats(trials: pd.DataFrame, target: Target) -> list[str]:
    notes = []
    unmeasured = trials[trials["status"].isin(FINISHED) & trials[target.best_key].isna()]
    if len(unmeasured):
        notes.append(
            f"{len(unmeasured)} finished trial(s) have no valid {metric_text.val_words(target)} (NaN or a "
            f"diverged sentinel in every epoch; {_per_optimizer(unmeasured)}): no mean counts them."
        )
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
        reasons = diverged.get(DIVERGED_REASON, pd.Series("", index=diverged.index)).fillna("").astype(str)
        on_validation = diverged[reasons.str.startswith(VAL_PREFIX)]
        if len(on_validation):
            first = on_validation.iloc[0]
            notes.append(
                f"{len(on_validation)} of them diverged on validation, with a finite training loss (e.g. "
                f"trial {first['trial_id']}: {first[DIVERGED_REASON]}): the model's outputs or the task's "
                "metric went NaN or infinite on the validation split."
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


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _per_optimizer(trials: pd.DataFrame) -> str:
    counts = trials.groupby("optimizer").size()
    return ", ".join(f"{optimizer}: {n}" for optimizer, n in counts.items())
