"""Read a stored optsweep experiment (no Ray needed) and answer: which optimizer, and how sure are we?

trials = analysis.load("results/adam_vs_sgd")      # one row per trial
summary = analysis.summarize(trials)                # one row per optimizer: best config, mean, CI
print(analysis.verdict(summary))
analysis.write_report("results/adam_vs_sgd")        # or: python -m analysis.report DIR

Everything follows the experiment's target metric and mode (`analysis.target_of(dir)`, recorded in
its study.json; val_acc, higher is better, when none is recorded): `load` attaches it to the tables
and the functions after it read it from there, or take an explicit ``target=Target(...)``.
"""

from analysis.caveats import caveats
from analysis.loading import curves, load
from analysis.reporting import write_report
from analysis.stats import Interval, bootstrap_ci, expected_best_curve, expected_max_curve
from analysis.summary import configurations, summarize, test_mean_column, tuning_budget
from analysis.target import target_of
from analysis.tune_files import NotAnExperimentError
from analysis.verdict import compare, verdict
from optsweep.vocabulary import DEFAULT_TARGET, Target

__all__ = [
    "DEFAULT_TARGET",
    "Interval",
    "NotAnExperimentError",
    "Target",
    "bootstrap_ci",
    "caveats",
    "compare",
    "configurations",
    "curves",
    "expected_best_curve",
    "expected_max_curve",
    "load",
    "summarize",
    "target_of",
    "test_mean_column",
    "tuning_budget",
    "verdict",
    "write_report",
]
