"""Fused trials through real Ray sweeps (issue 14): a fused study finds what the unfused one finds (the
same early-stopping decisions, statuses and epochs per member, metrics equal to float rounding), every
member has its own row and curve, and a fused group killed mid-run resumes every member from its
checkpoint to exactly the results of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from optsweep import analysis
from optsweep.sweeps import adam_vs_sgd
from optsweep.sweeps.early_stopping.halving import STATE_FILE
from optsweep.trainables import faults

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

# 6 configurations x 2 seeds per optimizer, 8 epochs: rungs at epochs 1 and 3 (keeping 2, then 1).
ARGV = ["--smoke", "--num-samples", "6", "--seeds", "2", "--max-epochs", "8", "--lr-max", "0.05"]
ARGV += ["--optimizers", "sgd,adam"]
HYPERPARAMETERS = ["optimizer", "lr", "weight_decay", "schedule", "seed"]
RUN_DEPENDENT = ["trial_id", "time_s", "node_id", "trial_dir", "tune_status", "error_message", "data_dir"]
METRICS = ["best_val_acc", "final_val_acc", "final_train_loss", "test_acc"]


def _trials(experiment: Path) -> pd.DataFrame:
    trials = pd.read_csv(experiment / "report" / "trials.csv")
    comparable = trials.drop(columns=[c for c in RUN_DEPENDENT if c in trials.columns])
    return comparable.sort_values(HYPERPARAMETERS, ignore_index=True)


@pytest.fixture(scope="module")
def runs(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    storage = tmp_path_factory.mktemp("fused")
    argv = [*ARGV, "--storage-path", str(storage)]
    # Groups of 4: three groups per optimizer, so rungs are decided across groups.
    assert adam_vs_sgd.main([*argv, "--fuse", "4", "--name", "fused"]) == 0
    assert adam_vs_sgd.main([*argv, "--no-fuse", "--name", "unfused"]) == 0
    return {"fused": storage / "fused", "unfused": storage / "unfused"}


@pytest.mark.timeout(900)
def test_a_fused_study_decides_and_finds_what_the_unfused_one_does(runs: dict[str, Path]) -> None:
    fused, unfused = _trials(runs["fused"]), _trials(runs["unfused"])
    assert len(fused) == len(unfused) == 24
    same = ["optimizer", "seed", "status", "epochs", "config_id", "lr", "weight_decay", "schedule"]
    # The same configuration has the same id fused or not (its number in the search, not trial order).
    pd.testing.assert_frame_equal(fused[same], unfused[same])
    for metric in METRICS:
        difference = (fused[metric] - unfused[metric]).abs()
        assert difference.max() < 1e-3, (metric, difference.max())  # fp32 rounding, vmapped vs plain
    decisions = [json.loads((runs[r] / STATE_FILE).read_text())["decisions"] for r in runs]
    assert decisions[0] == decisions[1] and {d[0] for d in decisions[0]} == {"sgd", "adam"}
    verdicts = [analysis.verdict(pd.read_csv(runs[r] / "report" / "summary.csv")) for r in runs]
    assert verdicts[0] == verdicts[1]


@pytest.mark.timeout(900)
def test_every_member_has_its_own_row_curve_and_share_of_the_time(runs: dict[str, Path]) -> None:
    experiment = runs["fused"]
    # Three fused groups per optimizer, each a Tune trial directory.
    groups = [d for d in (experiment / "search").iterdir() if d.is_dir() and d.name.startswith("run_trial")]
    adam = [d for d in groups if json.loads((d / "params.json").read_text())["optimizer"] == "adam"]
    assert len(adam) == 3 and len(groups) > len(adam)  # and sgd's, in the same experiment
    trials = pd.read_csv(experiment / "report" / "trials.csv")
    curves = analysis.curves(experiment)
    epochs = curves.groupby("trial_id")["epoch"].max()
    assert len(epochs) == 24
    assert (trials.set_index("trial_id")["epochs"] == epochs.reindex(trials["trial_id"]).values).all()
    assert set(trials["status"]) <= {"completed", "stopped_early"}
    assert (trials["time_s"] > 0).all()
    spent = pd.read_csv(experiment / "report" / "spent.csv").set_index("optimizer")
    assert (
        spent.loc["adam", "trials"] == 12
        and spent.loc["adam", "trial_epochs"] == trials.query("optimizer == 'adam'")["epochs"].sum()
    )


@pytest.mark.timeout(900)
def test_a_killed_fused_group_resumes_every_member_from_its_checkpoint(
    runs: dict[str, Path], tmp_path: Path, fault_dir: Path
) -> None:
    marker = faults.crash_marker(fault_dir, rank=0, epoch=3)  # the first group to start epoch 3 dies
    marker.touch()
    try:
        argv = [*ARGV, "--fuse", "4", "--storage-path", str(tmp_path), "--name", "crashed"]
        assert adam_vs_sgd.main(argv) == 0
        assert not marker.exists(), "no group reached epoch 3"
    finally:
        marker.unlink(missing_ok=True)
    pd.testing.assert_frame_equal(_trials(tmp_path / "crashed"), _trials(runs["fused"]))
    resumed = []
    for result_file in (tmp_path / "crashed").glob("*/run_trial*/result.json"):
        for line in result_file.read_text().splitlines():
            members = json.loads(line).get("members", {})
            resumed += [m for m in members.values() if m.get("resumed_from_epoch")]
    # Groups also resume after pausing at rung 1; the crashed one resumed from its epoch-2 checkpoint.
    assert 2 in {m["resumed_from_epoch"] for m in resumed}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fuse", ["--no-fuse", "--fuse=1"])
def test_max_concurrent_below_the_trials_per_optimizer_finishes(tmp_path: Path, fuse: str) -> None:
    """Tune's max_concurrent_trials counts trials paused at a rung: with it the sweep hung for good."""
    argv = ["--smoke", "--optimizers", "adam", "--max-concurrent", "1", fuse, "--storage-path", str(tmp_path)]
    assert adam_vs_sgd.main(argv) == 0
    trials = pd.read_csv(tmp_path / "adam_vs_sgd-smoke" / "report" / "trials.csv")
    assert sorted(trials["status"]) == ["completed", "stopped_early"]
