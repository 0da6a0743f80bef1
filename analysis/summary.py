"""From the trials table to per-configuration and per-optimizer results.

Everything follows the experiment's target metric and its mode (`analysis.target`): "best" is the
highest value of a max metric (accuracy) and the lowest of a min metric (perplexity, MSE). Below,
best_val_acc stands for the target's best column (best_val_perplexity, ...).

How the best configuration of each optimizer is chosen (the same rules for every optimizer):

1. A configuration's result is the mean best_val_acc over its *finished* seeds (completed or
   stopped_early). A seed that ASHA stopped counts with the value it had reached: dropping it
   would keep only the lucky seeds. Errored and incomplete seeds are left out (they measured
   nothing about the configuration).
2. A configuration in which any seed diverged is never the best: it is not a safe recommendation.
3. Means over fewer seeds are noisier, so a maximum over them is biased upwards. To keep that bias
   equal between optimizers, only configurations with at least ``min_seeds`` finished seeds
   compete, where ``min_seeds`` is the smallest, over optimizers, of the largest seed count any of
   its candidate configurations reached. In a finished sweep that is simply the number of seeds;
   in a half-finished one, no optimizer gets to pick a lucky single seed while another must
   average three.
4. Ties go to more seeds, then to the lower config_id.

Stages: the search stage (trials whose config names no stage, or `search`) chooses each optimizer's
configuration by the rules above; the confirmation stage (`confirm`) retrains it on fresh seeds. The
per-optimizer numbers come from the confirmation seeds of an optimizer that has any (column
``reported_from``): they played no part in the choice, so its mean is not raised by the winner's curse.
Without confirmation rows they come from the search seeds that chose the configuration (biased upwards).
`configurations`, `chosen_configurations` and the tuning budget read the search rows only.

The tuning-budget view scores every configuration that has a result, including the ones that
diverged: a diverged seed leaves no usable model, so it scores worse than any measured run could
(`diverged_score`: 0 for accuracy), and the configuration's score is the mean over its seeds,
i.e. the expected result of running it once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optsweep.analysis.loading import CONFIGURATION_COLUMN
from optsweep.analysis.stats import CONFIDENCE, expected_best_curve, expected_column, t_intervals
from optsweep.analysis.target import attach, resolve
from optsweep.vocabulary import (
    CONFIRM,
    DIVERGED,
    FINISHED,
    SEARCH,
    STAGE_COLUMN,
    STATUSES,
    Target,
    test_mean_key,
)

STATUS_COUNT_COLUMNS = {f"n_{status}": status for status in STATUSES}
REPORTED_FROM = "reported_from"
"""The summary's column of the stage its numbers come from: ``confirm`` or ``search``."""
test_mean_column = test_mean_key  # the summary's mean test metric column, e.g. test_acc_mean


def test_interval_columns(target: Target) -> tuple[str, str]:
    """The summary's columns of the test metric's interval, e.g. (test_acc_ci_low, test_acc_ci_high)."""
    return f"{target.test_key}_ci_low", f"{target.test_key}_ci_high"


def stage_rows(trials: pd.DataFrame, stage: str) -> pd.DataFrame:
    """The trials of one stage; a table without a stage column (an experiment from before stages) is
    all search."""
    if STAGE_COLUMN not in trials:
        return trials if stage == SEARCH else trials.iloc[0:0]
    return trials[trials[STAGE_COLUMN].fillna(SEARCH) == stage]


def diverged_score(target: Target, trials: pd.DataFrame) -> float:
    """What a diverged seed scores in the tuning-budget view: no better than the worst finished
    seed of the whole experiment (the same for every optimizer). A max metric also scores at most
    0, the floor of accuracy-like metrics (so accuracy keeps its 0); a min metric (a loss,
    perplexity) has no natural worst value, so it scores the worst finished seed's value (NaN if
    no seed finished)."""
    finished = trials.loc[trials["status"].isin(FINISHED), target.best_key].dropna()
    if target.mode == "max":
        return float(min(0.0, finished.min())) if len(finished) else 0.0
    return float(finished.max()) if len(finished) else float("nan")


def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """The hyperparameter columns of a trials table: those between ``seed`` and ``status``."""
    columns = list(trials.columns)
    return columns[columns.index("seed") + 1 : columns.index("status")]


def configurations(trials: pd.DataFrame, *, target: Target | None = None) -> pd.DataFrame:
    """One row per (optimizer, config_id) of the search stage: its hyperparameters, status counts,
    the mean/std of the target's best value (best_val_acc) over finished seeds, the mean test metric
    (test_acc_mean), the tuning score, and whether it may be chosen as best. `target`: see
    `analysis.target.resolve` (by default the one `trials` carries)."""
    target = resolve(trials, target)
    search = stage_rows(trials, SEARCH)
    best, test = target.best_key, target.test_key
    hparams = hyperparameter_columns(trials)
    finished = search["status"].isin(FINISHED) & search[best].notna()
    scored = search["status"].isin([*FINISHED, DIVERGED])
    penalty = diverged_score(target, search)
    values = pd.DataFrame(
        {
            "value": search[best].where(finished),
            "test": search[test].where(finished) if test in search else np.nan,
            "score": search[best].where(scored).mask(search["status"] == DIVERGED, penalty),
            "finished": finished,
            **{column: search["status"] == status for column, status in STATUS_COUNT_COLUMNS.items()},
        },
        index=search.index,
    )
    keys = [search["optimizer"], search["config_id"]]
    grouped = values.groupby(keys, sort=True)
    frame = pd.DataFrame(
        {
            **{h: search[hparams].groupby(keys, sort=True)[h].first() for h in hparams},
            "n_seeds": grouped["finished"].sum().astype("int64"),
            "mean": grouped["value"].mean(),
            "std": grouped["value"].std(ddof=1),
            test_mean_column(target): grouped["test"].mean(),
            "score": grouped["score"].mean(),
            "n_trials": grouped.size(),
            **{column: grouped[column].sum().astype("int64") for column in STATUS_COUNT_COLUMNS},
        }
    )
    frame.index.names = ["optimizer", "config_id"]
    frame = frame.reset_index()
    if frame.empty:
        columns = ["optimizer", "config_id", *hparams, "n_seeds", "mean", "std", test_mean_column(target)]
        frame = pd.DataFrame(columns=[*columns, "score", "n_trials", *STATUS_COUNT_COLUMNS])
    frame["candidate"] = (frame["n_diverged"] == 0) & (frame["n_seeds"] > 0)
    min_seeds = _min_seeds(frame)
    frame["eligible"] = frame["candidate"] & (frame["n_seeds"] >= min_seeds)
    return attach(frame, target)


def chosen_configurations(
    trials: pd.DataFrame, *, target: Target | None = None, top_k: int = 1
) -> pd.DataFrame:
    """What the confirmation stage retrains: each optimizer's `top_k` best configurations of the search
    stage, by the rule that chooses the summary's best configuration. One row per (optimizer, rank):
    optimizer, rank (1..k), config_id, configuration (its ``__configuration`` number; <NA> for trials
    from before numbers), hyperparameters (a dict of its non-null hyperparameter values), search_mean
    and n_seeds (its finished search seeds). An optimizer with no eligible configuration has no row;
    one with fewer than k has fewer rows."""
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(f"invalid top_k {top_k!r}: it must be a whole number >= 1")
    target = resolve(trials, target)
    ranked = _ranked(configurations(trials, target=target), target)
    ranked = ranked[ranked["rank"] <= top_k]
    hparams = hyperparameter_columns(trials)
    numbers = _configuration_numbers(trials)
    rows = [
        {
            "optimizer": row["optimizer"],
            "rank": int(row["rank"]),
            "config_id": row["config_id"],
            CONFIGURATION_COLUMN: numbers.get((row["optimizer"], row["config_id"]), pd.NA),
            "hyperparameters": _hyperparameters(row, hparams),
            "search_mean": float(row["mean"]),
            "n_seeds": int(row["n_seeds"]),
        }
        for _, row in ranked.iterrows()
    ]
    columns = ["optimizer", "rank", "config_id", CONFIGURATION_COLUMN, "hyperparameters", "search_mean"]
    frame = pd.DataFrame(rows, columns=[*columns, "n_seeds"])
    frame[CONFIGURATION_COLUMN] = frame[CONFIGURATION_COLUMN].astype("Int64")
    return attach(frame.reset_index(drop=True), target)


def summarize(
    trials: pd.DataFrame, *, target: Target | None = None, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """One row per optimizer, best first (in the target's direction): reported_from (the stage its
    numbers come from: ``confirm`` when the optimizer has confirmation trials, else ``search``), its
    chosen configuration (see the module docstring) with its hyperparameters, n_seeds, mean ± std of
    the target's best value (best_val_acc) over those seeds with its t-interval (ci_low, ci_high), the
    mean test metric read at each seed's best validation epoch (test_acc_mean) with its own interval
    (test_acc_ci_low, test_acc_ci_high), the configuration's search mean and seeds (search_mean,
    search_n_seeds; the same seeds as the numbers before them when reported from the search), and counts
    of search configurations and of trials by status (both stages). An optimizer without a result gets
    NaN results. The table carries the target."""
    target = resolve(trials, target)
    hparams = hyperparameter_columns(trials)
    configs = configurations(trials, target=target)
    reported = _reported_configurations(trials, configs, target)
    keys = ["optimizer", "config_id", STAGE_COLUMN]
    staged = trials.assign(**{STAGE_COLUMN: _stages(trials)})
    seeds = staged.merge(reported, on=keys, how="inner")
    finished = seeds[seeds["status"].isin(FINISHED) & seeds[target.best_key].notna()]
    values = _seed_statistics(finished, target.best_key, confidence)
    tests = _seed_statistics(finished, target.test_key, confidence) if target.test_key in finished else None
    test_low, test_high = test_interval_columns(target)
    optimizers = pd.Index(sorted(trials["optimizer"].unique()), name="optimizer")
    frame = pd.DataFrame(index=optimizers)
    frame[REPORTED_FROM] = np.where(optimizers.isin(_stage_optimizers(trials, CONFIRM)), CONFIRM, SEARCH)
    frame["config_id"] = reported.set_index("optimizer")["config_id"].reindex(optimizers)
    frame[hparams] = seeds.groupby("optimizer")[hparams].first().reindex(optimizers)
    frame["n_seeds"] = values["n"].reindex(optimizers).fillna(0).astype("int64")
    for column in ("mean", "std", "ci_low", "ci_high"):
        frame[column] = values[column].reindex(optimizers)
    for column, name in (("mean", test_mean_column(target)), ("ci_low", test_low), ("ci_high", test_high)):
        frame[name] = tests[column].reindex(optimizers) if tests is not None else np.nan
    chosen = reported.merge(configs, on=["optimizer", "config_id"], how="left").set_index("optimizer")
    frame["search_mean"] = chosen["mean"].reindex(optimizers)
    frame["search_n_seeds"] = chosen["n_seeds"].reindex(optimizers).fillna(0).astype("int64")
    frame["n_configs"] = configs.groupby("optimizer").size().reindex(optimizers).fillna(0).astype("int64")
    frame["n_trials"] = trials.groupby("optimizer").size().reindex(optimizers).astype("int64")
    for column, status in STATUS_COUNT_COLUMNS.items():
        frame[column] = (trials["status"] == status).groupby(trials["optimizer"]).sum().reindex(optimizers)
    frame["min_seeds"] = _min_seeds(configs)
    ascending = target.mode == "min"
    frame = frame.reset_index().sort_values(
        ["mean", "optimizer"], ascending=[ascending, True], na_position="last"
    )
    return attach(frame.reset_index(drop=True), target)


def tuning_budget(trials: pd.DataFrame, *, target: Target | None = None) -> pd.DataFrame:
    """Expected best configuration score after k random configurations of the search, k = 1..n, per
    optimizer, best in the target's direction (long format: optimizer, k, expected_max, std, n_configs,
    score_min, score_max; for a min target expected_min instead of expected_max). ``std`` is the spread
    of the best of k draws (how much the best of k random configurations varies), not an uncertainty
    of the expected value; score_min and score_max bound the best of any k draws. See the module
    docstring for the score; configurations with no result yet are not in the pool. The table
    carries the target."""
    target = resolve(trials, target)
    configs = configurations(trials, target=target)
    frames = []
    for optimizer, group in configs.groupby("optimizer", sort=True):
        scores = group["score"].dropna().to_numpy(dtype=float)
        curve = expected_best_curve(scores, target.mode)
        curve.insert(0, "optimizer", optimizer)
        curve["n_configs"] = scores.size
        curve["score_min"] = scores.min() if scores.size else np.nan
        curve["score_max"] = scores.max() if scores.size else np.nan
        frames.append(curve)
    if not frames:
        columns = ["optimizer", "k", expected_column(target.mode), "std", "n_configs", "score_min"]
        return attach(pd.DataFrame(columns=[*columns, "score_max"]), target)
    return attach(pd.concat(frames, ignore_index=True), target)


def _stages(trials: pd.DataFrame) -> pd.Series:
    if STAGE_COLUMN not in trials:
        return pd.Series(SEARCH, index=trials.index)
    return trials[STAGE_COLUMN].fillna(SEARCH)


def _stage_optimizers(trials: pd.DataFrame, stage: str) -> np.ndarray:
    return stage_rows(trials, stage)["optimizer"].unique()


def _reported_configurations(trials: pd.DataFrame, configs: pd.DataFrame, target: Target) -> pd.DataFrame:
    """Per optimizer with a result to report: (optimizer, config_id, stage). An optimizer with
    confirmation trials reports the confirmed configuration its search ranks best (the search's choice
    when that was confirmed; else the lowest confirmed config_id); any other its search's best."""
    ranks = _ranked(configs, target).set_index(["optimizer", "config_id"])["rank"]
    confirmed = stage_rows(trials, CONFIRM)[["optimizer", "config_id"]].drop_duplicates()
    confirmed["rank"] = ranks.reindex(pd.MultiIndex.from_frame(confirmed)).to_numpy()
    confirmed = confirmed.sort_values(["optimizer", "rank", "config_id"], na_position="last")
    confirmed = confirmed.drop_duplicates("optimizer").assign(**{STAGE_COLUMN: CONFIRM})
    searched = ranks[ranks == 1].reset_index()[["optimizer", "config_id"]].assign(**{STAGE_COLUMN: SEARCH})
    searched = searched[~searched["optimizer"].isin(confirmed["optimizer"])]
    columns = ["optimizer", "config_id", STAGE_COLUMN]
    return pd.concat([confirmed[columns], searched[columns]], ignore_index=True)


def _seed_statistics(seeds: pd.DataFrame, column: str, confidence: float) -> pd.DataFrame:
    """Per optimizer: n, mean, std and the t-interval (ci_low, ci_high) of `column` over `seeds`."""
    grouped = seeds.groupby("optimizer")[column]
    table = pd.DataFrame({"n": grouped.count(), "mean": grouped.mean(), "std": grouped.std(ddof=1)})
    low, high = t_intervals(table["mean"], table["std"], table["n"], confidence=confidence)
    return table.assign(ci_low=low, ci_high=high)


def _ranked(configs: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The eligible configurations, each optimizer's best first (ties: more seeds, then the lower
    config_id), with their rank within the optimizer."""
    eligible = configs[configs["eligible"]]
    by_mean = target.mode == "min"
    ranked = eligible.sort_values(
        ["optimizer", "mean", "n_seeds", "config_id"], ascending=[True, by_mean, False, True]
    )
    return ranked.assign(rank=ranked.groupby("optimizer").cumcount() + 1)


def _configuration_numbers(trials: pd.DataFrame) -> dict[tuple[str, str], Any]:
    if CONFIGURATION_COLUMN not in trials:
        return {}
    search = stage_rows(trials, SEARCH)
    numbers = search.groupby(["optimizer", "config_id"])[CONFIGURATION_COLUMN].first().dropna()
    return {key: int(value) for key, value in numbers.items()}


def _hyperparameters(row: pd.Series, hparams: list[str]) -> dict[str, Any]:
    """The non-null hyperparameter values of a configuration row, as plain Python values."""
    values = {}
    for name in hparams:
        value = row[name]
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            continue
        values[name] = value.item() if isinstance(value, np.generic) else value
    return values


def _min_seeds(configs: pd.DataFrame) -> int:
    candidates = configs[configs["candidate"]]
    if candidates.empty:
        return 1
    return int(candidates.groupby("optimizer")["n_seeds"].max().min())
