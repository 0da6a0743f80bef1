"""sweeps/sync_vs_async.py: bad flags refused in one line before Ray, and the smoke run end to end
(four real trials: sync on a TorchTrainer and async-ps, each with and without a straggler) with its
report, where the straggler measurably slows the synchronous run. Its report (analysis/sync_vs_async.py)
on a hand-made curves table whose answers are worked out by hand, without Ray."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from optsweep.analysis import sync_vs_async as report
from optsweep.sweeps import sync_vs_async
from optsweep.vocabulary import Target


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers 0 is invalid"),
        (["--straggler-delay", "0"], "--straggler-delay 0 is invalid"),
        (["--optimizer", "adamm"], "adamm"),
        (["--epochs", "0"], "--epochs 0 is invalid"),
    ],
)
def test_bad_flags_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sync_vs_async.parse(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error, error


def test_updates_per_epoch_follow_the_modes() -> None:
    settings = sync_vs_async.parse(["--workers", "2"])
    sync = sync_vs_async.updates_per_epoch(settings, "sync")
    async_ps = sync_vs_async.updates_per_epoch(settings, "async-ps")
    assert async_ps == 2 * sync  # the same examples: one update per worker gradient instead of per step


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("ray_session")
def test_smoke_run_writes_the_comparison(tmp_path: Path) -> None:
    settings = sync_vs_async.parse(["--smoke", "--storage-path", str(tmp_path)])
    report = sync_vs_async.run(settings)
    assert report == tmp_path / "sync_vs_async-smoke" / "report"
    for name in (
        "runs.csv",
        "curves.csv",
        "report.md",
        "target_vs_time.png",
        "target_vs_updates.png",
        "staleness.png",
    ):
        assert (report / name).stat().st_size > 0, name
    runs = pd.read_csv(report / "runs.csv").set_index("run")
    assert sorted(runs.index) == ["async-ps", "async-ps-straggler", "sync", "sync-straggler"]
    assert (runs["epochs"] == 2).all()
    assert runs.loc["async-ps", "updates"] == 2 * runs.loc["sync", "updates"]
    assert runs["final_val_acc"].between(0.1, 1.0).all()
    # Every gradient the server applied is in the staleness distribution.
    assert (
        runs.loc["async-ps", "staleness_mean"] >= 0 and runs.loc["async-ps-straggler", "staleness_max"] >= 1
    )
    # Measured, not assumed: the straggler's sleep holds back every synchronous step.
    assert runs.loc["sync-straggler", "samples_per_s"] < 0.8 * runs.loc["sync", "samples_per_s"]
    text = (report / "report.md").read_text()
    assert "What the straggler costs" in text and "async-ps-straggler" in text


# ------------------------------------------------------------------ the report on a hand-made table
def _curves() -> pd.DataFrame:
    """Three epochs of four runs; only the asynchronous runs report their updates."""
    rows = []
    for run, mode, delay, times, throughput, acc, updates in (
        ("sync", "sync", 0.0, [2, 1, 1], [50, 100, 120], [0.5, 0.92, 0.95], None),
        ("async-ps", "async-ps", 0.0, [1, 1, 1], [100, 200, 220], [0.6, 0.85, 0.91], [20, 40, 60]),
        ("sync-straggler", "sync", 0.02, [4, 2, 2], [25, 50, 60], [0.5, 0.88, 0.93], None),
        ("async-ps-straggler", "async-ps", 0.02, [1, 1, 1], [100, 180, 200], [0.55, 0.8, 0.86], [20, 40, 60]),
    ):
        for epoch in range(3):
            row = {
                "run": run,
                "mode": mode,
                "straggler_delay_s": delay,
                "epoch": epoch + 1,
                "epoch_time_s": float(times[epoch]),
                "samples_per_s": float(throughput[epoch]),
                "train_loss": 1.0 / (epoch + 1),
                "val_acc": acc[epoch],
                "test_acc": acc[epoch] - 0.01,
                "node_id": "n1",  # a reported key the report does not keep
            }
            if updates is not None:
                row |= {"updates": updates[epoch], "staleness_mean": 0.5, "staleness_max": 2.0}
            rows.append(row)
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # the report sorts them itself


STALENESS = {"async-ps": [30, 20, 10], "async-ps-straggler": [10, 0, 40, 0, 10]}
COMPARISON = report.Comparison(
    task="digits",
    workers=2,
    epochs=3,
    optimizer="adam",
    lr=3e-3,
    seed=0,
    straggler_delay=0.02,
    target_value=0.9,
    target=Target("acc", "max"),
    updates_per_epoch={"sync": 10, "async-ps": 20},
)


def test_the_report_computes_times_updates_throughput_and_staleness(tmp_path: Path) -> None:
    text = report.write_report(tmp_path, _curves(), STALENESS, COMPARISON)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(report.FILES)  # no temporaries left
    for name in report.FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "report.md").read_text() == text

    runs = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs.columns) == [
        "run", "mode", "straggler_delay_s", "epochs", "updates", "train_time_s", "samples_per_s",
        "final_val_acc", "best_val_acc", "time_to_0.9_s", "updates_to_0.9", "staleness_mean", "staleness_max",
    ]  # fmt: skip
    runs = runs.set_index("run")
    expected = {  # worked out by hand from _curves and STALENESS
        "sync": (3, 30, 4.0, 110.0, 0.95, 0.95, 3.0, 20.0, math.nan, math.nan),
        "async-ps": (3, 60, 3.0, 210.0, 0.91, 0.91, 3.0, 60.0, 40 / 60, 2),
        "sync-straggler": (3, 30, 8.0, 55.0, 0.93, 0.93, 8.0, 30.0, math.nan, math.nan),
        "async-ps-straggler": (3, 60, 3.0, 190.0, 0.86, 0.86, math.nan, math.nan, 120 / 60, 4),
    }
    for run, values in expected.items():
        got = runs.loc[run, "epochs":"staleness_max"].tolist()
        assert got == pytest.approx(list(values), nan_ok=True), run

    curves = pd.read_csv(tmp_path / "curves.csv")
    assert "node_id" not in curves
    sync = curves[curves["run"] == "sync"]
    assert sync["epoch"].tolist() == [1, 2, 3]
    assert sync["train_time_s"].tolist() == [2.0, 3.0, 4.0]  # cumulative epoch times
    assert sync["updates"].tolist() == [10, 20, 30]  # counted: 10 per synchronous epoch
    assert curves[curves["run"] == "async-ps"]["updates"].tolist() == [20, 40, 60]  # as reported

    assert "- sync: throughput x0.50, training time x2.00, final val_acc 0.9500 -> 0.9300" in text
    assert "- async-ps: throughput x0.90, training time x1.00, final val_acc 0.9100 -> 0.8600" in text
    assert "- async-ps (60 gradients): 0: 0.500, 1: 0.333, 2: 0.167" in text
    assert "- async-ps-straggler (60 gradients): 0: 0.167, 2: 0.667, 4: 0.167" in text
    assert "Task digits, 2 workers, 3 epochs, adam lr 0.003, seed 0" in text


def test_a_lower_is_better_target_is_reached_from_above(tmp_path: Path) -> None:
    curves = _curves().rename(columns={"val_acc": "val_loss", "test_acc": "test_loss"})
    curves["val_loss"] = 1.0 - curves["val_loss"]
    comparison = dataclasses.replace(COMPARISON, target=Target("loss", "min"), target_value=0.1)
    report.write_report(tmp_path, curves, STALENESS, comparison)
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("run")
    assert runs.loc["sync", "time_to_0.1_s"] == 3.0  # 0.08 at epoch 2
    assert runs.loc["sync", "best_val_loss"] == pytest.approx(0.05)
    assert runs.loc["sync-straggler", "time_to_0.1_s"] == 8.0  # 0.07 at its last epoch
    assert runs.loc["async-ps", "time_to_0.1_s"] == 3.0  # 0.09 at its last epoch
    assert math.isnan(runs.loc["async-ps-straggler", "time_to_0.1_s"])  # 0.14 at best


def test_the_report_module_needs_neither_ray_nor_torch() -> None:
    code = (
        "import sys, optsweep.analysis.sync_vs_async\n"
        "print([m for m in ('ray', 'torch') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
