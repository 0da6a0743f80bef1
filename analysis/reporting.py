"""Write `EXPERIMENT_DIR/report/`: trials.csv, summary.csv, tuning_budget.csv, report.md, report.html, PNGs.

Reads only files (no Ray, no project code), so it works on a copied or half-finished experiment
and can be rerun at any time; every file is replaced atomically.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from optsweep.analysis import atomic, metric_text, plots, spent
from optsweep.analysis.caveats import caveats
from optsweep.analysis.html_report import render_html
from optsweep.analysis.loading import DIVERGED, FINISHED, read_experiment
from optsweep.analysis.markdown import ReportContent, render
from optsweep.analysis.summary import summarize, tuning_budget
from optsweep.analysis.target import resolve
from optsweep.analysis.tune_files import REPORT_DIR_NAME
from optsweep.analysis.verdict import verdict
from optsweep.vocabulary import DEFAULT_TARGET, Target


def figure_captions(target: Target) -> dict[str, tuple[str, str]]:
    """File name -> (alt text, one-line caption), in terms of the target metric."""
    val = metric_text.val_words(target)
    end = "bottom" if target.mode == "max" else "top"
    return {
        "lr_sensitivity.png": (
            "Learning-rate sensitivity",
            f"Best {val} against learning rate; line: best configuration per learning rate, "
            f"star: chosen configuration, crosses at the {end}: diverged trials.",
        ),
        "learning_curves.png": (
            "Learning curves",
            f"{val.capitalize()} and training loss of each optimizer's chosen configuration, on the seeds "
            "the summary reports (confirmation seeds when there are any); thin lines are seeds, the thick "
            "line and band their mean and range over the epochs every seed reached.",
        ),
        "tuning_budget.png": (
            "Tuning budget",
            f"Expected best {val} after k random configurations of the search (band: ±1 std of the best "
            "of k draws, its spread, not an interval).",
        ),
        "lr_wd_heatmap.png": (
            "Learning rate x weight decay",
            "Best configuration mean for each learning rate and weight decay; 'div k/n': every "
            "configuration there had a diverged seed (k of n seeds diverged); '*': too few finished seeds "
            "to be chosen; blank: not tried.",
        ),
    }


FIGURES = figure_captions(DEFAULT_TARGET)
"""File name -> (alt text, one-line caption) for the default target."""


def write_report(experiment_dir: str | os.PathLike[str], *, target: Target | None = None) -> Path:
    """(Re)write the report of an experiment directory and return the report directory. Tables,
    verdict, figures and text follow `target` (default: the one the experiment recorded).

    Raises FileNotFoundError / NotAnExperimentError / BadConfigError like `analysis.load`.
    """
    root = Path(experiment_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment = read_experiment(root, target=target)
    data_notes = [f"Reading the data: {w.message}" for w in caught]
    trials, curves = experiment.trials, experiment.curves
    target = resolve(trials)  # the experiment's own when none was given
    summary = summarize(trials)
    budget = tuning_budget(trials)
    spent_table = spent.spent(trials)

    out = root / REPORT_DIR_NAME
    out.mkdir(exist_ok=True)
    has_result = bool(summary["n_seeds"].gt(0).any())
    has_points = bool((trials["lr"].notna() & trials["status"].isin([*FINISHED, DIVERGED])).any())
    figures = {
        "lr_sensitivity.png": plots.lr_sensitivity(trials, summary) if has_points else None,
        "learning_curves.png": plots.learning_curves(curves, summary) if has_result else None,
        "tuning_budget.png": plots.tuning_budget(budget) if not budget.empty else None,
        "lr_wd_heatmap.png": plots.lr_wd_heatmap(trials),
    }
    for name, figure in figures.items():
        if figure is None:
            (out / name).unlink(missing_ok=True)  # a stale figure from an earlier report would mislead
        else:
            atomic.save_figure(out / name, figure)

    optimizers = " vs ".join(sorted(trials["optimizer"].unique())) or "no trials"
    captions = figure_captions(target)
    content = ReportContent(
        title=f"Optimizer comparison: {optimizers} ({root.resolve().name})",
        trials=trials,
        summary=summary,
        budget=budget,
        verdict=verdict(summary),
        caveats=caveats(trials, summary),
        figures=[(name, *captions[name]) for name, figure in figures.items() if figure is not None],
        data_notes=data_notes,
        target=target,
        spent=spent_table,
        imbalances=spent.imbalances(spent_table),
        rungs=spent.rungs_reached(root, trials),
    )
    atomic.write_csv(out / "trials.csv", trials)
    atomic.write_csv(out / "summary.csv", summary)
    atomic.write_csv(out / "tuning_budget.csv", budget)
    atomic.write_csv(out / "spent.csv", content.spent)
    text = render(content)
    atomic.write_text(out / "report.md", text)
    atomic.write_text(out / "report.html", render_html(text, out, title=content.title, experiment_dir=root))
    return out
