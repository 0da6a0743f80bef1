"""The report's statistical claims, measured the way a statistician checks them: thousands of simulated
studies with known true means, in the trials table's own schema, through analysis's public functions.

- Coverage: the per-optimizer 95% interval (validation and test metric) covers the true mean.
- False positives: among identical optimizers, how often any pair is called "beats" (Holm across pairs).
- The winner's curse: with a confirmation stage (the configuration chosen by `chosen_configurations` on
  the search seeds, retrained on fresh seeds), the reported mean is unbiased for the chosen
  configuration's true mean; without one (the search mean reported) it is not.

Every study is seeded; one table holds many independent studies as separate optimizers (each
optimizer's interval depends only on its own rows), so each measurement is one `summarize` call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from optsweep import analysis
from optsweep.vocabulary import CONFIRM, SEARCH

SIGMA = 0.01  # seed-to-seed standard deviation of a configuration's score
TRUE_MEAN = 0.9
TEST_OFFSET = -0.01  # the test metric's true mean is the validation's minus this much
STUDIES = 4000  # for coverage: one summarize call, so they are cheap
COMPARED_STUDIES = 600  # for false positives: one compare call per study
CONFIGURATIONS = 24  # the default study's configurations per optimizer
SEARCH_SEEDS = 5
CONFIRM_SEEDS = 10
CONFIG_SPREAD = SIGMA / 2  # spread of the configurations' true means: a close race at the top


def trials_table(rows: list[tuple[str, int, int, float, float, str]]) -> pd.DataFrame:
    """A trials table in the report's schema from (optimizer, configuration, seed, lr, best_val_acc,
    stage) rows; test_acc is the validation value plus TEST_OFFSET plus its own noise (a fixed rng)."""
    frame = pd.DataFrame(rows, columns=["optimizer", "configuration", "seed", "lr", "best_val_acc", "stage"])
    noise = np.random.default_rng(99).normal(0.0, SIGMA / 2, len(frame))
    frame.insert(0, "trial_id", [f"t{i:07d}" for i in range(len(frame))])
    frame["status"] = "completed"
    frame["best_epoch"] = 20
    frame["test_acc"] = frame["best_val_acc"] + TEST_OFFSET + noise
    frame["config_id"] = [
        f"{o}-c{c + 1:02d}" for o, c in zip(frame["optimizer"], frame["configuration"], strict=True)
    ]
    columns = ["trial_id", "optimizer", "seed", "lr", "status", "best_val_acc", "best_epoch", "test_acc"]
    return frame[[*columns, "config_id", "configuration", "stage"]]


def covers(low: Any, high: Any, value: Any) -> Any:
    """Elementwise: low <= value <= high."""
    return (low <= value) & (value <= high)


def coverage(n_seeds: int, studies: int = STUDIES, seed: int = 0) -> tuple[float, float]:
    """The share of studies whose interval of the mean (validation, test) covers its true mean."""
    rng = np.random.default_rng(seed)
    values = rng.normal(TRUE_MEAN, SIGMA, (studies, n_seeds))
    rows = [(f"s{i:04d}", 0, k, 1e-3, values[i, k], SEARCH) for i in range(studies) for k in range(n_seeds)]
    trials = trials_table(rows)
    summary = analysis.summarize(trials)
    low, high = analysis.test_interval_columns(analysis.DEFAULT_TARGET)
    val = covers(summary["ci_low"], summary["ci_high"], TRUE_MEAN).mean()
    # The test metric's true mean per study: the validation's plus the offset, its noise independent.
    test_mean = TRUE_MEAN + TEST_OFFSET
    test = covers(summary[low], summary[high], test_mean).mean()
    return float(val), float(test)


def any_beats_rate(
    optimizers: int, studies: int = COMPARED_STUDIES, n_seeds: int = SEARCH_SEEDS, seed: int = 1
) -> float:
    """The share of studies of identical optimizers in which some pair is called "beats"."""
    rng = np.random.default_rng(seed)
    values = rng.normal(TRUE_MEAN, SIGMA, (studies, optimizers, n_seeds))
    rows = [
        (f"s{i:04d}-o{j}", 0, k, 1e-3, values[i, j, k], SEARCH)
        for i in range(studies)
        for j in range(optimizers)
        for k in range(n_seeds)
    ]
    summary = analysis.summarize(trials_table(rows))
    summary["study"] = summary["optimizer"].str.split("-").str[0]
    called = [
        (analysis.compare(group)["conclusion"] == "beats").any()
        for _, group in summary.groupby("study", sort=False)
    ]
    return float(np.mean(called))


def winners_curse(
    studies: int = 400, confirm: bool = True, spread: float = CONFIG_SPREAD, seed: int = 2
) -> tuple[float, float]:
    """Mean (reported - true mean of the chosen configuration) / SIGMA over studies of one optimizer
    with CONFIGURATIONS configurations (true means spread by `spread`) x SEARCH_SEEDS seeds, and the
    share of studies whose interval covers that true mean."""
    rng = np.random.default_rng(seed)
    true_means = rng.normal(TRUE_MEAN, spread, (studies, CONFIGURATIONS))
    values = rng.normal(true_means[..., None], SIGMA, (studies, CONFIGURATIONS, SEARCH_SEEDS))
    rows = [
        (f"s{i:04d}", c, k, 1e-3 * (c + 1), values[i, c, k], SEARCH)
        for i in range(studies)
        for c in range(CONFIGURATIONS)
        for k in range(SEARCH_SEEDS)
    ]
    search = trials_table(rows)
    chosen = analysis.chosen_configurations(search).set_index("optimizer")
    if confirm:  # what the runner does: fresh seeds of each optimizer's chosen configuration
        fresh = []
        for optimizer, row in chosen.iterrows():
            number = int(row["configuration"])
            study = int(optimizer[1:])
            draws = rng.normal(true_means[study, number], SIGMA, CONFIRM_SEEDS)
            lr = row["hyperparameters"]["lr"]
            fresh += [(optimizer, number, 100 + k, lr, draws[k], CONFIRM) for k in range(CONFIRM_SEEDS)]
        trials = trials_table(rows + fresh)
    else:
        trials = search
    summary = analysis.summarize(trials).set_index("optimizer").loc[chosen.index]
    assert (summary["reported_from"] == (CONFIRM if confirm else SEARCH)).all()
    assert (summary["config_id"] == chosen["config_id"]).all()
    truth = np.array([true_means[int(o[1:]), int(n)] for o, n in chosen["configuration"].items()])
    bias = float(((summary["mean"].to_numpy() - truth) / SIGMA).mean())
    covered = float(covers(summary["ci_low"].to_numpy(), summary["ci_high"].to_numpy(), truth).mean())
    return bias, covered


@pytest.mark.parametrize("n_seeds", [3, 5, 10])
def test_intervals_cover_the_true_mean(n_seeds: int) -> None:
    val, test = coverage(n_seeds)
    assert val >= 0.93, f"validation interval coverage {val:.3f} at {n_seeds} seeds"
    assert test >= 0.93, f"test interval coverage {test:.3f} at {n_seeds} seeds"


@pytest.mark.parametrize("optimizers", [2, 3, 4])
def test_identical_optimizers_are_rarely_called_different(optimizers: int) -> None:
    rate = any_beats_rate(optimizers)
    assert rate <= 0.06, f"'beats' among {optimizers} identical optimizers in {rate:.3f} of studies"


def test_a_confirmation_stage_removes_the_winners_curse() -> None:
    bias, covered = winners_curse(confirm=True)
    assert abs(bias) <= 0.15, f"confirmed winner's mean is {bias:+.2f} SD from its true mean"
    assert covered >= 0.9
    # The same measurement sees the curse when the search seeds are reported (no confirmation).
    biased, _ = winners_curse(confirm=False)
    assert biased >= 0.3, f"search-only bias {biased:+.2f} SD: the measurement would not see the curse"
