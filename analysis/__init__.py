"""Read a stored optsweep experiment (no Ray needed) and answer: which optimizer, and how sure are we?

trials = analysis.load("results/adam_vs_sgd")      # one row per trial
summary = analysis.summarize(trials)                # one row per optimizer: chosen config, mean, t-interval
print(analysis.verdict(summary))                    # from Welch's tests, Holm-adjusted across pairs
analysis.compare(summary)                           # every pair: difference, interval, p, Holm-adjusted p
analysis.chosen_configurations(trials, top_k=1)     # what the confirmation stage retrains
analysis.write_report("results/adam_vs_sgd")        # or: python -m optsweep.analysis.report DIR

A study has two stages (the trials table's `stage` column): the search chooses each optimizer's
configuration, the confirmation retrains it on fresh seeds; the summary reports the confirmation seeds
when there are any (column `reported_from`), else the search seeds, which are selection-biased.

Everything follows the experiment's target metric and mode (`analysis.target_of(dir)`, recorded in
its study.json; val_acc, higher is better, when none is recorded): `load` attaches it to the tables
and the functions after it read it from there, or take an explicit ``target=Target(...)``.
"""

from optsweep.analysis.caveats import caveats
from optsweep.analysis.config_check import BadConfigError
from optsweep.analysis.loading import curves, load
from optsweep.analysis.reporting import write_report
from optsweep.analysis.stats import (
    Interval,
    bootstrap_ci,
    expected_best_curve,
    expected_max_curve,
    t_interval,
)
from optsweep.analysis.summary import (
    chosen_configurations,
    configurations,
    summarize,
    test_interval_columns,
    test_mean_column,
    tuning_budget,
)
from optsweep.analysis.target import target_of
from optsweep.analysis.tune_files import NotAnExperimentError
from optsweep.analysis.verdict import compare, verdict
from optsweep.vocabulary import DEFAULT_TARGET, Target

__all__ = [
    "DEFAULT_TARGET",
    "BadConfigError",
    "Interval",
    "NotAnExperimentError",
    "Target",
    "bootstrap_ci",
    "caveats",
    "chosen_configurations",
    "compare",
    "configurations",
    "curves",
    "expected_best_curve",
    "expected_max_curve",
    "load",
    "summarize",
    "t_interval",
    "target_of",
    "test_interval_columns",
    "test_mean_column",
    "tuning_budget",
    "verdict",
    "write_report",
]
