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

The tuning-budget view scores every configuration that has a result, including the ones that
diverged: a diverged seed leaves no usable model, so it scores worse than any measured run could
(`diverged_score`: 0 for accuracy), and the configuration's score is the mean over its seeds,
i.e. the expected result of running it once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats import BOOTSTRAP_SEED, N_RESAMPLES, bootstrap_ci, expected_best_curve, expected_column
from analysis.target import attach, resolve
from optsweep.vocabulary import DIVERGED, FINISHED, STATUSES, Target, test_mean_key

STATUS_COUNT_COLUMNS = {f"n_{status}": status for status in STATUSES}
test_mean_column = test_mean_key  # the summary's mean test metric column, e.g. test_acc_mean


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
    """One row per (optimizer, config_id): its hyperparameters, status counts, the mean/std of
    the target's best value (best_val_acc) over finished seeds, the mean test metric
    (test_acc_mean), the tuning score, and whether it may be chosen as best. `target`: see
    `analysis.target.resolve` (by default the one `trials` carries)."""
    target = resolve(trials, target)
    best, test = target.best_key, target.test_key
    hparams = hyperparameter_columns(trials)
    penalty = diverged_score(target, trials)
    rows = []
    for (optimizer, config_id), group in trials.groupby(["optimizer", "config_id"], sort=True):
        finished = _finished(group, target)
        counts = {column: int((group["status"] == s).sum()) for column, s in STATUS_COUNT_COLUMNS.items()}
        scored = group[group["status"].isin([*FINISHED, DIVERGED])]
        seed_scores = np.where(scored["status"] == DIVERGED, penalty, scored[best])
        seed_scores = seed_scores[~np.isnan(seed_scores)]
        rows.append(
            {
                "optimizer": optimizer,
                "config_id": config_id,
                **group.iloc[0][hparams].to_dict(),
                "n_seeds": len(finished),
                "mean": finished[best].mean() if len(finished) else np.nan,
                "std": finished[best].std(ddof=1) if len(finished) > 1 else np.nan,
                test_mean_column(target): finished[test].mean() if test in finished else np.nan,
                "score": seed_scores.mean() if seed_scores.size else np.nan,
                "n_trials": len(group),
                **counts,
            }
        )
    columns = ["optimizer", "config_id", *hparams, "n_seeds", "mean", "std", test_mean_column(target)]
    frame = pd.DataFrame(rows, columns=[*columns, "score", "n_trials", *STATUS_COUNT_COLUMNS])
    frame["candidate"] = (frame["n_diverged"] == 0) & (frame["n_seeds"] > 0)
    min_seeds = _min_seeds(frame)
    frame["eligible"] = frame["candidate"] & (frame["n_seeds"] >= min_seeds)
    return attach(frame, target)


def summarize(
    trials: pd.DataFrame,
    *,
    target: Target | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """One row per optimizer, best first (in the target's direction): its best configuration (see
    the module docstring) with its hyperparameters, n_seeds, mean ± std of the target's best value
    (best_val_acc) over seeds, the 95% percentile bootstrap interval (ci_low, ci_high), the mean
    test metric (test_acc_mean), and counts of configurations and of trials by status. An optimizer
    without an eligible configuration gets NaN results. The table carries the target."""
    target = resolve(trials, target)
    test_mean = test_mean_column(target)
    hparams = hyperparameter_columns(trials)
    configs = configurations(trials, target=target)
    min_seeds = _min_seeds(configs)
    rows = []
    for optimizer, group in trials.groupby("optimizer", sort=True):
        row: dict[str, object] = {"optimizer": optimizer}
        best = _best_config(configs[configs["optimizer"] == optimizer], target)
        if best is None:
            row.update({"config_id": None, **dict.fromkeys(hparams), "n_seeds": 0})
            row.update({"mean": np.nan, "std": np.nan, "ci_low": np.nan, "ci_high": np.nan})
            row[test_mean] = np.nan
        else:
            seeds = _finished(group[group["config_id"] == best["config_id"]], target)
            # Sorted, so the bootstrap (which depends on the order of the values) is reproducible.
            values = seeds.sort_values(["seed", "trial_id"])[target.best_key].to_numpy()
            interval = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
            row.update({"config_id": best["config_id"], **best[hparams].to_dict(), "n_seeds": len(values)})
            row.update({"mean": values.mean(), "std": best["std"]})
            row.update({"ci_low": interval.low, "ci_high": interval.high})
            row[test_mean] = best[test_mean]
        row["n_configs"] = group["config_id"].nunique()
        row["n_trials"] = len(group)
        row.update({c: int((group["status"] == s).sum()) for c, s in STATUS_COUNT_COLUMNS.items()})
        row["min_seeds"] = min_seeds
        rows.append(row)
    columns = ["optimizer", "config_id", *hparams, "n_seeds", "mean", "std", "ci_low", "ci_high"]
    columns += [test_mean, "n_configs", "n_trials", *STATUS_COUNT_COLUMNS, "min_seeds"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["n_seeds"] = frame["n_seeds"].astype("int64")
    ascending = target.mode == "min"
    frame = frame.sort_values(["mean", "optimizer"], ascending=[ascending, True], na_position="last")
    return attach(frame.reset_index(drop=True), target)


def tuning_budget(trials: pd.DataFrame, *, target: Target | None = None) -> pd.DataFrame:
    """Expected best configuration score after k random configurations, k = 1..n, per optimizer,
    best in the target's direction (long format: optimizer, k, expected_max, std, n_configs,
    score_min, score_max; for a min target expected_min instead of expected_max; score_min and
    score_max bound the best of any k draws). See the module docstring for the score;
    configurations with no result yet are not in the pool. The table carries the target."""
    target = resolve(trials, target)
    configs = configurations(trials, target=target)
    frames = []
    for optimizer, group in configs.groupby("optimizer", sort=True):
        scores = group["score"].dropna().to_numpy()
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


def _finished(trials: pd.DataFrame, target: Target) -> pd.DataFrame:
    return trials[trials["status"].isin(FINISHED) & trials[target.best_key].notna()]


def _min_seeds(configs: pd.DataFrame) -> int:
    candidates = configs[configs["candidate"]]
    if candidates.empty:
        return 1
    return int(candidates.groupby("optimizer")["n_seeds"].max().min())


def _best_config(configs: pd.DataFrame, target: Target) -> pd.Series | None:
    eligible = configs[configs["eligible"]]
    if eligible.empty:
        return None
    by_mean = target.mode == "min"
    ranked = eligible.sort_values(["mean", "n_seeds", "config_id"], ascending=[by_mean, False, True])
    return ranked.iloc[0]
