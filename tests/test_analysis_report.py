"""`python -m optsweep.analysis.report` and write_report: files, content, errors, no Ray needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import ADAM, FakeTrial, rising, standard_experiment, write_experiment
from matplotlib.image import imread

from optsweep import analysis
from optsweep.analysis.report import main

REPORT_FILES = {
    "trials.csv",
    "summary.csv",
    "tuning_budget.csv",
    "spent.csv",
    "report.md",
    "report.html",
    "lr_sensitivity.png",
    "learning_curves.png",
    "tuning_budget.png",
    "lr_wd_heatmap.png",
}
FORBIDDEN_IMPORTS = ("ray", "torch", "trainables", "sweeps", "optimizers")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    experiment = standard_experiment(tmp_path_factory.mktemp("report") / "exp")
    return analysis.write_report(experiment)


def test_all_report_files_are_written_and_nothing_else(report_dir: Path) -> None:
    assert {p.name for p in report_dir.iterdir()} == REPORT_FILES  # no temporary files left behind


def test_csvs_round_trip(report_dir: Path) -> None:
    trials = pd.read_csv(report_dir / "trials.csv")
    assert len(trials) == 27 and list(trials.columns[:4]) == ["trial_id", "optimizer", "seed", "lr"]
    summary = pd.read_csv(report_dir / "summary.csv").set_index("optimizer")
    assert summary.loc["adam", "mean"] == pytest.approx(0.95)
    assert summary.loc["sgd", "config_id"] == "sgd-c01"
    for column in ("n_seeds", "std", "ci_low", "ci_high", "test_acc_mean", "n_trials", "n_incomplete"):
        assert column in summary.columns
    budget = pd.read_csv(report_dir / "tuning_budget.csv")
    assert budget.groupby("optimizer")["k"].max().to_dict() == {"adam": 5, "sgd": 4}


def test_report_markdown_tells_the_story(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    assert text.startswith("# Optimizer comparison: adam vs sgd (exp)")
    for heading in (
        "## Verdict",
        "## What was run",
        "## Best configuration per optimizer",
        "## Figures",
        "## Tuning budget",
        "## Caveats",
        "## Method",
    ):
        assert heading in text
    welch = "no significant difference (difference 0.010, 95% CI [-0.013, 0.033], Welch's t-test p = 0.288)"
    assert welch in text
    assert "selection-biased (the winner's curse)" in text  # no confirmation stage
    assert "Selection rule: the validation metric picks the epoch" in text
    assert "- Dataset: digits" in text and "- Epochs per trial (max): 5" in text
    assert "| adam | adam-c01 | lr=0.001, weight_decay=0, schedule=cosine" in text
    for png in ("lr_sensitivity.png", "learning_curves.png", "tuning_budget.png", "lr_wd_heatmap.png"):
        assert f"]({png})" in text
    assert "stopped early by the scheduler" in text


def test_pngs_are_real_images(report_dir: Path) -> None:
    for png in report_dir.glob("*.png"):
        image = imread(png)
        height, width = image.shape[:2]
        assert width >= 600 and height >= 400, png.name
        assert np.ptp(image[..., :3]) > 0.5, f"{png.name} looks blank"


def test_rerun_gives_the_same_tables_and_drops_stale_figures(tmp_path: Path) -> None:
    experiment = standard_experiment(tmp_path / "exp")
    first = analysis.write_report(experiment)
    before = {name: (first / name).read_text() for name in ("summary.csv", "report.md")}
    # Only one weight decay in the data now: the heatmap from the earlier report must go.
    for trial_dir in (experiment / "adam").iterdir():
        if trial_dir.is_dir() and "0.0001" in (trial_dir / "params.json").read_text():
            for path in trial_dir.iterdir():
                path.unlink()
            trial_dir.rmdir()
    (next((experiment / "adam").glob("experiment_state-*.json"))).unlink()
    second = analysis.write_report(experiment)
    assert not (second / "lr_wd_heatmap.png").exists()
    assert (second / "report.md").read_text() != before["report.md"]
    analysis.write_report(standard_experiment(tmp_path / "exp2"))
    assert (tmp_path / "exp2" / "report" / "summary.csv").read_text() == before["summary.csv"]


def test_single_seed_report_is_honest(tmp_path: Path) -> None:
    trials = [FakeTrial("adam", 0, {**ADAM, "lr": lr}, rising(0.9 + lr)) for lr in (0.01, 0.02)]
    trials += [FakeTrial("sgd", 0, {**ADAM, "lr": lr}, rising(0.8 + lr)) for lr in (0.01, 0.02)]
    for trial in trials[2:]:
        trial.hparams = {"lr": trial.hparams["lr"], "weight_decay": 0.0, "schedule": "step", "momentum": 0.9}
    report = analysis.write_report(write_experiment(tmp_path / "exp", trials))
    text = (report / "report.md").read_text()
    assert "no evidence that adam is better" in text
    assert "n/a (1 seed)" in text and "single finished seed" in text
    assert not (report / "lr_wd_heatmap.png").exists()


def test_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = standard_experiment(tmp_path / "exp")
    assert main([str(experiment)]) == 0
    assert capsys.readouterr().out.strip() == str(experiment / "report" / "report.md")
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no such experiment directory: {tmp_path / 'missing'}\n"


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_cli_error_is_one_line_and_exit_code_2(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("not a directory")
    result = _run_cli(str(target))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_cli_regenerates_a_stored_experiment_without_ray(tmp_path: Path) -> None:
    experiment = standard_experiment(tmp_path / "exp")
    probe = (
        "import runpy, sys; sys.argv = ['optsweep.analysis.report', sys.argv[1]]\n"
        "try:\n    runpy.run_module('optsweep.analysis.report', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        f"loaded = [m for m in {FORBIDDEN_IMPORTS!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(experiment)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (experiment / "report").iterdir()} == REPORT_FILES


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optsweep.analysis.report", *args], capture_output=True, text=True, timeout=120
    )
