"""Read a stored optsweep experiment (no Ray needed) and answer: which optimizer, and how sure are we?

trials = analysis.load("results/adam_vs_sgd")      # one row per trial
summary = analysis.summarize(trials)                # one row per optimizer: best config, mean, CI
print(analysis.verdict(summary))
analysis.write_report("results/adam_vs_sgd")        # or: python -m analysis.report DIR
"""

from analysis.caveats import caveats
from analysis.loading import curves, load
from analysis.reporting import write_report
from analysis.stats import Interval, bootstrap_ci, expected_max_curve
from analysis.summary import configurations, summarize, tuning_budget
from analysis.tune_files import NotAnExperimentError
from analysis.verdict import compare, verdict

__all__ = [
    "Interval",
    "NotAnExperimentError",
    "bootstrap_ci",
    "caveats",
    "compare",
    "configurations",
    "curves",
    "expected_max_curve",
    "load",
    "summarize",
    "tuning_budget",
    "verdict",
    "write_report",
]
