"""Compare optimizers from a summary table and say what the evidence supports, in words.

Every pair of optimizers with at least two seeds a side is tested: the difference of their means with
its 95% Welch interval, and Welch's t-test of it. The p-values are adjusted with Holm's method across
all the pairs tested, so that the chance of calling any of them different when none is stays at 5% or
below (simulated: tests/test_statistics_simulation.py). "Beats" means a Holm-adjusted p below 0.05;
anything else is "no significant difference", which says only that this experiment cannot tell the
two apart, not that they are equal. A side with a single seed has no estimate of seed-to-seed
variation and is "undetermined". "Better" follows the target's mode: for a min metric (perplexity,
MSE) the lower mean wins. The summary alone is enough (mean, std and n_seeds per optimizer), so the
verdict can be rebuilt from summary.csv.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optsweep.analysis import metric_text
from optsweep.analysis.stats import ALPHA, CONFIDENCE, holm, welch_differences
from optsweep.analysis.target import resolve
from optsweep.vocabulary import Target

BEATS = "beats"
NO_DIFFERENCE = "no significant difference"
UNDETERMINED = "undetermined"
COMPARE_COLUMNS = (
    "first",
    "second",
    "mean_first",
    "mean_second",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "conclusion",
)


def compare(summary: pd.DataFrame, *, target: Target | None = None) -> pd.DataFrame:
    """Every pair of optimizers with a result: first, second (first has the better mean: higher for a
    max target, lower for a min one), mean_first, mean_second, difference (mean_first - mean_second)
    with its 95% Welch interval (ci_low, ci_high), Welch's two-sided p_value, p_holm (Holm-adjusted
    across the pairs tested) and conclusion: "beats" (p_holm < 0.05), "no significant difference" or
    "undetermined" (a side has fewer than two seeds; not tested, NaN p-values)."""
    ranked = _with_results(summary, resolve(summary, target))
    first, second = np.triu_indices(len(ranked), k=1)  # every pair, the better mean first
    means = ranked["mean"].to_numpy(dtype=float)
    stds = ranked["std"].to_numpy(dtype=float)
    seeds = ranked["n_seeds"].to_numpy(dtype=float)
    tested = (seeds[first] >= 2) & (seeds[second] >= 2) & ~np.isnan(stds[first]) & ~np.isnan(stds[second])
    a, b = first[tested], second[tested]
    test = welch_differences(
        (means[a], stds[a], seeds[a]), (means[b], stds[b], seeds[b]), confidence=CONFIDENCE
    )
    columns = {"ci_low": test.low, "ci_high": test.high, "p_value": test.p_value}
    tested_values = {}
    for column, values in columns.items():
        tested_values[column] = np.full(len(first), np.nan)
        tested_values[column][tested] = values
    p_values = tested_values["p_value"]
    table = pd.DataFrame(
        {
            "first": ranked["optimizer"].to_numpy()[first],
            "second": ranked["optimizer"].to_numpy()[second],
            "mean_first": means[first],
            "mean_second": means[second],
            "difference": means[first] - means[second],
            **tested_values,
            "p_holm": holm(p_values),
        }
    )
    table["conclusion"] = np.where(
        np.isnan(p_values), UNDETERMINED, np.where(table["p_holm"] < ALPHA, BEATS, NO_DIFFERENCE)
    )
    return table[list(COMPARE_COLUMNS)]


def verdict(summary: pd.DataFrame, *, target: Target | None = None) -> str:
    """The answer in a sentence or two from the corrected tests, e.g. "adam beats sgd: adam (0.953 ±
    0.004, 95% CI [0.950, 0.957], 5 seeds) vs sgd (...) (difference 0.011, 95% CI [0.006, 0.016],
    Welch's t-test p = 0.002)." `target`: by default the one `summary` carries (`analysis.summarize`
    attaches it)."""
    target = resolve(summary, target)
    ranked = _with_results(summary, target)
    places = metric_text.decimals(ranked["mean"])
    missing = [o for o in summary["optimizer"] if o not in set(ranked["optimizer"])]
    if ranked.empty:
        sentence = "No optimizer has a finished, non-diverged configuration yet, so there is no result."
        missing = []
    elif len(ranked) == 1:
        only = describe(ranked.iloc[0], places)
        sentence = f"Only {only} has a result, so there is nothing to compare it with."
    else:
        pairs = compare(ranked, target=target)
        if len(ranked) == 2:
            sentence = _pair_sentence(ranked.iloc[0], ranked.iloc[1], pairs.iloc[0], places)
        else:
            sentence = _leader_sentence(ranked, pairs, target, places)
    if missing:
        has, are = ("has", "is") if len(missing) == 1 else ("have", "are")
        sentence += f" {_join(missing)} {has} no finished, non-diverged configuration and {are} not compared."
    return sentence


def describe(row: pd.Series, places: int = metric_text.DIGITS) -> str:
    """One summary row in words, e.g. adam (0.953 ± 0.004, 95% CI [0.950, 0.957], 3 seeds), with
    `places` decimals."""
    n, name, mean = int(row["n_seeds"]), row["optimizer"], row["mean"]
    if n < 2:
        return f"{name} ({mean:.{places}f}, 1 seed)"
    interval = f"95% CI [{row['ci_low']:.{places}f}, {row['ci_high']:.{places}f}]"
    return f"{name} ({mean:.{places}f} ± {row['std']:.{places}f}, {interval}, {n} seeds)"


def evidence(pair: pd.Series, places: int, family: int) -> str:
    """A tested pair's numbers in words: difference 0.011, 95% CI [0.006, 0.016], Holm-adjusted p =
    0.002 (or "Welch's t-test p = ..." when it is the only pair tested)."""
    p = pair["p_holm"] if family > 1 else pair["p_value"]
    name = "Holm-adjusted p" if family > 1 else "Welch's t-test p"
    interval = f"95% CI [{pair['ci_low']:.{places}f}, {pair['ci_high']:.{places}f}]"
    return f"difference {pair['difference']:.{places}f}, {interval}, {name} {format_p(p)}"


def format_p(p: float) -> str:
    """ "= 0.002", "< 0.001" """
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _pair_sentence(first: pd.Series, second: pd.Series, pair: pd.Series, places: int) -> str:
    one, two = describe(first, places), describe(second, places)
    if pair["conclusion"] == BEATS:
        return (
            f"{first['optimizer']} beats {second['optimizer']}: {one} vs {two} ({evidence(pair, places, 1)})."
        )
    if pair["conclusion"] == NO_DIFFERENCE:
        return f"{one} and {two} show no significant difference ({evidence(pair, places, 1)})."
    return (
        f"{one} is ahead of {two}, but with a single seed there is no estimate "
        f"of seed-to-seed variation, so this is no evidence that {first['optimizer']} is better."
    )


def _leader_sentence(ranked: pd.DataFrame, pairs: pd.DataFrame, target: Target, places: int) -> str:
    leader = ranked.iloc[0]
    family = int(pairs["p_value"].notna().sum())
    described = {row["optimizer"]: describe(row, places) for _, row in ranked.iterrows()}
    groups: dict[str, list[str]] = {BEATS: [], NO_DIFFERENCE: [], UNDETERMINED: []}
    for _, pair in pairs[pairs["first"] == leader["optimizer"]].iterrows():
        shown = described[pair["second"]]
        if pair["conclusion"] != UNDETERMINED:
            shown = f"{shown[:-1]}; {evidence(pair, places, family)})"
        groups[pair["conclusion"]].append(shown)
    clauses = []
    if groups[BEATS]:
        clauses.append(f"it beats {_join(groups[BEATS])}")
    if groups[NO_DIFFERENCE]:
        clauses.append(f"it shows no significant difference from {_join(groups[NO_DIFFERENCE])}")
    if groups[UNDETERMINED]:
        clauses.append(
            f"it cannot be told apart from {_join(groups[UNDETERMINED])}, since one side has a single seed"
        )
    others = pairs[(pairs["first"] != leader["optimizer"]) & (pairs["conclusion"] == BEATS)]
    if len(others):
        beaten = [
            f"{pair['first']} beats {pair['second']} ({evidence(pair, places, family)})"
            for _, pair in others.iterrows()
        ]
        clauses.append(f"among the others, {_join(beaten)}")
    best = metric_text.best_word(target)
    return f"{describe(leader, places)} has the {best} mean; " + "; ".join(clauses) + "."


def _with_results(summary: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The optimizers with a result, best mean first."""
    ranked = summary[summary["mean"].notna() & (summary["n_seeds"] > 0)]
    order = np.lexsort(
        (ranked["optimizer"].to_numpy(), target.sign() * -ranked["mean"].to_numpy(dtype=float))
    )
    return ranked.iloc[order].reset_index(drop=True)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
