"""Compare optimizers from a summary table and say what the evidence supports, in words.

Two optimizers are called different only if the 95% bootstrap intervals of their best
configurations do not overlap. That rule is conservative (intervals can overlap while the
difference is still significant), which is the side to err on in a report. An interval from a
single seed is degenerate and never supports a claim either way. "Better" follows the target's mode:
for a min metric (perplexity, MSE) the lower interval wins.
"""

from __future__ import annotations

import pandas as pd

from analysis import metric_text
from analysis.stats import Interval
from analysis.target import resolve
from optsweep.vocabulary import Target

FEW_SEEDS = 5  # below this, percentile bootstrap intervals are known to be too narrow
BEATS = "beats"
NO_DIFFERENCE = "no significant difference"
UNDETERMINED = "undetermined"


def compare(summary: pd.DataFrame, *, target: Target | None = None) -> pd.DataFrame:
    """Every pair of optimizers with a result: columns first, second (first has the better mean:
    higher for a max target, lower for a min one), mean_first, mean_second, difference
    (mean_first - mean_second), intervals_overlap and conclusion, one of "beats", "no significant
    difference" or "undetermined" (a side has fewer than two seeds)."""
    ranked = _with_results(summary, resolve(summary, target))
    rows = []
    for i, first in ranked.iterrows():
        for _, second in ranked.iloc[i + 1 :].iterrows():
            rows.append(
                {
                    "first": first["optimizer"],
                    "second": second["optimizer"],
                    "mean_first": first["mean"],
                    "mean_second": second["mean"],
                    "difference": first["mean"] - second["mean"],
                    "intervals_overlap": _interval(first).overlaps(_interval(second)),
                    "conclusion": _conclusion(first, second),
                }
            )
    columns = ["first", "second", "mean_first", "mean_second", "difference", "intervals_overlap"]
    return pd.DataFrame(rows, columns=[*columns, "conclusion"])


def verdict(summary: pd.DataFrame, *, target: Target | None = None) -> str:
    """The answer in a sentence or two, e.g. adam (0.953 ± 0.004, 95% CI [0.950, 0.957], 3 seeds)
    and sgd (...) show no significant difference (95% bootstrap intervals overlap). `target`:
    by default the one `summary` carries (`analysis.summarize` attaches it)."""
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
    elif len(ranked) == 2:
        sentence = _pair_sentence(ranked.iloc[0], ranked.iloc[1], places)
    else:
        sentence = _leader_sentence(ranked, target, places)
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


def _pair_sentence(first: pd.Series, second: pd.Series, places: int) -> str:
    conclusion = _conclusion(first, second)
    one, two = describe(first, places), describe(second, places)
    if conclusion == BEATS:
        hedge = _few_seeds_hedge(min(first["n_seeds"], second["n_seeds"]))
        return (
            f"{first['optimizer']} beats {second['optimizer']}: {one} vs {two}; "
            f"the 95% bootstrap intervals do not overlap{f' ({hedge})' if hedge else ''}."
        )
    if conclusion == NO_DIFFERENCE:
        return f"{one} and {two} show no significant difference (95% bootstrap intervals overlap)."
    return (
        f"{one} is ahead of {two}, but with a single seed there is no estimate "
        f"of seed-to-seed variation, so this is no evidence that {first['optimizer']} is better."
    )


def _leader_sentence(ranked: pd.DataFrame, target: Target, places: int) -> str:
    leader = ranked.iloc[0]
    groups: dict[str, list[str]] = {BEATS: [], NO_DIFFERENCE: [], UNDETERMINED: []}
    fewest_beaten = leader["n_seeds"]
    for _, other in ranked.iloc[1:].iterrows():
        conclusion = _conclusion(leader, other)
        groups[conclusion].append(describe(other, places))
        if conclusion == BEATS:
            fewest_beaten = min(fewest_beaten, other["n_seeds"])
    clauses = []
    if groups[BEATS]:
        hedge = _few_seeds_hedge(fewest_beaten)
        hedge = f"; {hedge}" if hedge else ""
        clauses.append(f"it beats {_join(groups[BEATS])} (95% bootstrap intervals do not overlap{hedge})")
    if groups[NO_DIFFERENCE]:
        clauses.append(
            f"it shows no significant difference from {_join(groups[NO_DIFFERENCE])} "
            "(95% bootstrap intervals overlap)"
        )
    if groups[UNDETERMINED]:
        clauses.append(
            f"it cannot be told apart from {_join(groups[UNDETERMINED])}, since one side has a single seed"
        )
    best = metric_text.best_word(target)
    return f"{describe(leader, places)} has the {best} mean; " + "; ".join(clauses) + "."


def _few_seeds_hedge(n_seeds: float) -> str:
    """A warning to attach to a "beats" resting on few seeds (empty if there are enough)."""
    if n_seeds >= FEW_SEEDS:
        return ""
    return f"with {int(n_seeds)} seeds such intervals come out too narrow: confirm with more seeds"


def _conclusion(first: pd.Series, second: pd.Series) -> str:
    a, b = _interval(first), _interval(second)
    if a.degenerate or b.degenerate:
        return UNDETERMINED
    return NO_DIFFERENCE if a.overlaps(b) else BEATS


def _interval(row: pd.Series) -> Interval:
    return Interval(float(row["ci_low"]), float(row["ci_high"]), int(row["n_seeds"]))


def _with_results(summary: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The optimizers with a result, best mean first."""
    ranked = summary[summary["mean"].notna() & (summary["n_seeds"] > 0)]
    ascending = target.mode == "min"
    return ranked.sort_values(["mean", "optimizer"], ascending=[ascending, True]).reset_index(drop=True)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
