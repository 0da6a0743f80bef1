"""The storage filling up or becoming unwritable mid-sweep: a clear error, nothing already written
destroyed, and the same command resumes once the storage is fixed (needs root: a small tmpfs, chattr)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from optsweep.sweeps import adam_vs_sgd
from optsweep.sweeps.cluster import storage_guard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

ARGV = [
    "--optimizers",
    "sgd",
    "--num-samples",
    "6",
    "--seeds",
    "1",
    "--confirm-seeds",
    "0",
    "--max-epochs",
    "20",
    "--scheduler",
    "fifo",
    "--name",
    "faults",
]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _free_mb(path: Path) -> float:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize / 2**20


def _experiment_is_whole(experiment: Path) -> None:
    assert json.loads((experiment / "study.json").read_text())["num_samples"] == 6
    for state in experiment.glob("sgd/experiment_state-*.json"):
        json.loads(state.read_text())  # not truncated


@pytest.mark.timeout(600)
def test_full_disk_stops_cleanly_and_resumes(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(storage_guard.MIN_FREE_ENV, "32")
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * int((_free_mb(small_disk) - 34) * 2**20))  # 2 MB above the margin

    assert adam_vs_sgd.main([*ARGV, "--storage-path", str(small_disk)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "MB free, below the 32 MB that optsweep keeps free" in err
    assert "the experiment is left resumable" in err
    _experiment_is_whole(small_disk / "faults")

    ballast.unlink()
    assert adam_vs_sgd.main([*ARGV, "--storage-path", str(small_disk)]) == 0
    trials = pd.read_csv(small_disk / "faults" / "report" / "trials.csv")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}


def _chattr(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", "-R", flag, str(path)], capture_output=True, text=True, check=False)


@pytest.mark.timeout(600)
def test_unwritable_storage_stops_cleanly_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The experiment turns immutable mid-run (chattr +i: even root gets EPERM, as after a revoked
    permission or a storage server turning read-only)."""
    monkeypatch.setenv(storage_guard.MIN_FREE_ENV, "1")
    probe = tmp_path / "probe"
    probe.mkdir()
    if _chattr("+i", probe).returncode != 0:
        pytest.skip("chattr +i is not supported here (needs root on ext2/3/4, xfs or btrfs)")
    _chattr("-i", probe)
    experiment = tmp_path / "faults"

    def freeze_after_first_results() -> None:
        deadline = time.monotonic() + 120
        while not list(experiment.glob("search/*/result.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        _chattr("+i", experiment)

    freezer = threading.Thread(target=freeze_after_first_results)
    freezer.start()
    try:
        code = adam_vs_sgd.main([*ARGV, "--storage-path", str(tmp_path)])
    finally:
        freezer.join()
        frozen = _chattr("-i", experiment)
    err = capsys.readouterr().err.strip().splitlines()
    assert frozen.returncode == 0, frozen.stderr
    assert code == 1, err
    assert err[-1].startswith("error: ") and "Operation not permitted" in err[-1], err
    assert "the experiment is left resumable" in err[-1]
    _experiment_is_whole(experiment)

    assert adam_vs_sgd.main([*ARGV, "--storage-path", str(tmp_path)]) == 0
    trials = pd.read_csv(experiment / "report" / "trials.csv")
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}
