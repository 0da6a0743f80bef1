"""A trial's result.json that lost lines (Ray 2.60 rewrites a restarted trial's result.json from an older
copy in storage) is completed from its progress.csv, nested keys (a fused group's members) included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
from analysis_fixtures import standard_experiment

from optsweep import analysis
from optsweep.analysis.tune_files import read_progress


def test_epochs_missing_from_result_json_are_read_from_progress_csv(tmp_path: Path) -> None:
    whole = analysis.load(standard_experiment(tmp_path / "whole"))
    damaged_root = standard_experiment(tmp_path / "damaged")
    result_files = sorted(damaged_root.glob("*/*/result.json"))
    for path in result_files[:3]:  # the first two epochs lost, as after a bad restore
        lines = path.read_text().splitlines()
        path.write_text("".join(line + "\n" for line in lines[2:]))
    damaged = analysis.load(damaged_root)
    columns = [c for c in whole.columns if c not in ("trial_dir",)]
    pd.testing.assert_frame_equal(damaged[columns], whole[columns])


def test_progress_rows_are_parsed_and_nested_again(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "diverged", "node_id", "members/0/val_acc", "members/1/val_acc"])
        writer.writerow(["1", "False", "abc", "0.5", "0.25"])
        writer.writerow(["2", "True", "abc", "0.75", ""])
    assert read_progress(path) == [
        {
            "epoch": 1,
            "diverged": False,
            "node_id": "abc",
            "members": {"0": {"val_acc": 0.5}, "1": {"val_acc": 0.25}},
        },
        {"epoch": 2, "diverged": True, "node_id": "abc", "members": {"0": {"val_acc": 0.75}}},
    ]
    assert json.loads(json.dumps(read_progress(path)))  # plain JSON types only


def test_an_earlier_run_of_a_trial_the_state_names_elsewhere_is_not_a_second_trial(tmp_path: Path) -> None:
    """A driver killed after starting a trial but before its next snapshot leaves that trial's directory;
    the resumed sweep creates the trial again (same id) in a new directory, which the state names."""
    import shutil

    root = standard_experiment(tmp_path / "study")
    whole = analysis.load(root)
    named = sorted(root.glob("*/train_fn_*"))[0]
    earlier = named.with_name(named.name.replace("2026-11-22_00-00-00", "2026-11-21_23-59-59"))
    shutil.copytree(named, earlier)
    pd.testing.assert_frame_equal(analysis.load(root), whole)
