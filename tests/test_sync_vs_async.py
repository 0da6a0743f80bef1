"""sweeps/sync_vs_async.py: bad flags refused in one line before Ray, and the smoke run end to end
(four real trials: sync on a TorchTrainer and async-ps, each with and without a straggler) with its
report, where the straggler measurably slows the synchronous run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from optsweep.sweeps import sync_vs_async


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
