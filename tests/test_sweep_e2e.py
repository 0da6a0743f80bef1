"""The headline study end to end on the shared local Ray: smoke run, diverging sweep, Optuna search,
resume after the driver is killed, and multi-worker trials under ASHA that must not hang."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from optsweep.sweeps import adam_vs_sgd

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

STATUSES = {"completed", "stopped_early", "diverged", "error"}
TRIAL_COLUMNS = [
    "trial_id",
    "optimizer",
    "seed",
    "lr",
    "weight_decay",
    "schedule",
    "status",
    "epochs",
    "best_val_acc",
    "final_val_acc",
    "final_train_loss",
    "test_acc",
    "time_s",
]


def _sweep(tmp_path: Path, *argv: str) -> int:
    return adam_vs_sgd.main([*argv, "--storage-path", str(tmp_path)])


@pytest.fixture(scope="module")
def smoke_experiment(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    storage = tmp_path_factory.mktemp("smoke")
    assert adam_vs_sgd.main(["--smoke", "--storage-path", str(storage)]) == 0
    return storage / "adam_vs_sgd-smoke"


@pytest.mark.timeout(300)
def test_smoke_sweep_leaves_a_complete_report(smoke_experiment: Path) -> None:
    report = smoke_experiment / "report"
    for name in ("trials.csv", "summary.csv", "report.md", "lr_sensitivity.png", "learning_curves.png"):
        assert (report / name).is_file(), name
    trials = pd.read_csv(report / "trials.csv")
    assert list(trials.columns[: len(TRIAL_COLUMNS) - 7]) == TRIAL_COLUMNS[:6]
    assert set(TRIAL_COLUMNS) <= set(trials.columns)
    assert len(trials) == 3 * 2 * 1  # optimizers x configurations x seeds
    assert set(trials["status"]) <= STATUSES
    assert trials.groupby("optimizer").size().to_dict() == {"adam": 2, "adamw": 2, "sgd": 2}
    for hparam in ("momentum", "nesterov", "beta1", "beta2", "eps"):
        assert hparam in trials.columns  # every optimizer's own hyperparameters are listed
    summary = pd.read_csv(report / "summary.csv")
    assert set(summary["optimizer"]) == {"sgd", "adam", "adamw"}
    text = (report / "report.md").read_text()
    assert "## Verdict" in text
    assert json.loads((smoke_experiment / "study.json").read_text())["num_samples"] == 2
    # Retention: each finished trial keeps only its newest checkpoint (--keep-checkpoints 1); it saved two.
    kept = [len(list(trial_dir.glob("checkpoint_*"))) for trial_dir in smoke_experiment.glob("*/run_trial_*")]
    # One directory per Tune trial: each fused group's (of 1-2 members here); none diverged in epoch 1.
    assert kept and max(kept) == 1 and min(kept) == 1, kept
    # Report files get the same permissions as the files Tune writes (not mkstemp's 0600).
    tune_file_mode = stat.S_IMODE(next(smoke_experiment.glob("*/*/result.json")).stat().st_mode)
    for name in ("trials.csv", "report.md"):
        assert stat.S_IMODE((report / name).stat().st_mode) == tune_file_mode, name


@pytest.mark.timeout(300)
def test_notebook_runs_on_the_smoke_experiment(
    smoke_experiment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(
        Path(adam_vs_sgd.__file__).parents[1] / "analysis/notebooks/adam_vs_sgd.ipynb", 4
    )
    monkeypatch.setenv("OPTSWEEP_EXPERIMENT", str(smoke_experiment))
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.timeout(300)
def test_rerun_of_a_finished_study_only_rewrites_its_report(
    smoke_experiment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (smoke_experiment / "report" / "report.md").unlink()
    result_lines = {p: len(p.read_text().splitlines()) for p in smoke_experiment.glob("*/*/result.json")}
    assert adam_vs_sgd.main(["--smoke", "--storage-path", str(smoke_experiment.parent)]) == 0
    assert "Resuming the search" in capsys.readouterr().out
    assert (smoke_experiment / "report" / "report.md").is_file()
    assert {
        p: len(p.read_text().splitlines()) for p in smoke_experiment.glob("*/*/result.json")
    } == result_lines


@pytest.mark.timeout(300)
def test_diverging_sweep_finishes_with_every_trial_diverged(tmp_path: Path) -> None:
    assert _sweep(tmp_path, "--smoke", "--lr-min", "1e4", "--lr-max", "1e6", "--name", "diverging") == 0
    trials = pd.read_csv(tmp_path / "diverging" / "report" / "trials.csv")
    assert len(trials) == 6
    assert set(trials["status"]) == {"diverged"}
    assert "diverged" in (tmp_path / "diverging" / "report" / "report.md").read_text()


@pytest.mark.timeout(300)
def test_optuna_search_runs_every_configuration_with_every_seed(tmp_path: Path) -> None:
    argv = ["--smoke", "--search", "optuna", "--seeds", "2", "--optimizers", "adam", "--name", "tpe"]
    assert _sweep(tmp_path, *argv) == 0
    trials = pd.read_csv(tmp_path / "tpe" / "report" / "trials.csv")
    assert len(trials) == 2 * 2
    assert sorted(trials["seed"]) == [0, 0, 1, 1]
    # the two seeds of a configuration share its hyperparameters exactly
    assert trials.groupby(["lr", "beta1", "beta2", "eps"]).size().tolist() == [2, 2]
    assert not [c for c in trials.columns if c.startswith("__")]


def _finished_trials(experiment: Path) -> dict[Path, int]:
    finished = {}
    for result in experiment.glob("*/*/result.json"):
        lines = result.read_text().splitlines()
        if lines and json.loads(lines[-1])["epoch"] == 15:  # the resume test's --max-epochs
            finished[result] = len(lines)
    return finished


def _unfinished_with_two_checkpoints(experiment: Path) -> list[Path]:
    finished = {p.parent for p in _finished_trials(experiment)}
    running = {p.parent for p in experiment.glob("*/*/result.json")} - finished
    return sorted(d for d in running if len(list(d.glob("checkpoint_*"))) == 2)


# The CNN makes each trial last a few seconds, so that the driver dies with trials still running.
RESUME_ARGV = ["--optimizers", "sgd,adam", "--num-samples", "3", "--seeds", "1", "--confirm-seeds", "0",
               "--max-epochs", "15", "--model", "cnn", "--scheduler", "fifo", "--name", "resume"]  # fmt: skip


@pytest.mark.timeout(600)
def test_killed_driver_resumes_without_rerunning_finished_trials_and_refuses_a_second_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    argv = [*RESUME_ARGV, "--storage-path", str(tmp_path)]
    experiment = tmp_path / "resume"
    driver = subprocess.Popen(
        [sys.executable, adam_vs_sgd.__file__, *argv, "--address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None and not list(experiment.glob("search/*/")):
        time.sleep(0.1)  # the driver holds the study's lock once its first trial exists
    # While it runs, a second sweep on the same experiment is refused instead of interleaving writes.
    # (Checked before waiting for the kill moment: the refusal takes seconds, in which trials finish.)
    assert adam_vs_sgd.main(argv) == 2
    assert f"another sweep (pid {driver.pid}) is running on {experiment}" in capsys.readouterr().err
    while time.monotonic() < deadline and driver.poll() is None:
        if len(_finished_trials(experiment)) >= 2 and _unfinished_with_two_checkpoints(experiment):
            break
        time.sleep(0.05)
    assert driver.poll() is None, driver.communicate()[0].decode()
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    finished_before = _finished_trials(experiment)
    # The kill may also have torn checkpoints: damage every checkpoint of the unfinished trials that have
    # two (Tune's last snapshot may name either), so the one Tune restores from is certainly damaged.
    damaged = _unfinished_with_two_checkpoints(experiment)
    assert len(finished_before) >= 2 and damaged
    for trial_dir in damaged:
        for checkpoint in trial_dir.glob("checkpoint_*"):
            (checkpoint / "state.pt").write_bytes(b"torn write")

    assert adam_vs_sgd.main(argv) == 0
    assert "Resuming the search" in capsys.readouterr().out
    for result, lines in finished_before.items():
        assert len(result.read_text().splitlines()) == lines, f"{result.parent.name} was run again"
    trials = pd.read_csv(experiment / "report" / "trials.csv")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}
    assert (trials["epochs"] == 15).all()
    for trial_dir in damaged:  # never loaded silently: they started over, and said so
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        # Restored from a snapshot that named the damaged checkpoints: it refused them and says so. A trial
        # the last snapshot did not yet name a checkpoint of is restarted by Tune without one.
        restored = any("resumed_from_epoch" in r or "unusable_checkpoints" in r for r in results)
        loaded_silently = any(
            r.get("resumed_from_epoch", 0) > 0 and not r.get("unusable_checkpoints") for r in results
        )
        assert not loaded_silently, trial_dir.name
        if restored:
            assert any(r.get("unusable_checkpoints", 0) >= 1 for r in results), trial_dir.name


@pytest.mark.timeout(600)
def test_multi_worker_trials_under_asha_run_to_the_end(tmp_path: Path) -> None:
    """Ray 2.60 leaks a stopped multi-worker trial's placement group and the next trial hangs
    (trainables/decisions.py); our scheduler lets the loop stop itself, so every trial ends."""
    argv = [
        "--optimizers",
        "sgd",
        "--num-samples",
        "3",
        "--seeds",
        "1",
        "--confirm-seeds",
        "0",
        "--max-epochs",
        "4",
        "--workers-per-trial",
        "2",
        "--cpus-per-worker",
        "0.5",
        "--lr-min",
        "1e-4",
        "--lr-max",
        "0.5",
        "--schedules",
        "constant",
        # One trial at a time, in order: Ray's ASHA decides each trial alone as it reports, so which one it
        # stops depends on who reports first; this order makes it stop one for sure.
        "--max-concurrent",
        "1",
        "--name",
        "ddp",
    ]
    assert _sweep(tmp_path, *argv) == 0
    trials = pd.read_csv(tmp_path / "ddp" / "report" / "trials.csv")
    assert len(trials) == 3
    assert set(trials["status"]) <= {"completed", "stopped_early"}
    assert "stopped_early" in set(trials["status"])  # ASHA really stopped one, and the next ones still ran
    assert (tmp_path / "ddp" / "search" / "train_runs").is_dir()


def _early_snapshot(experiment: Path, stop: threading.Event) -> dict[str, str]:
    """Copies of Tune's experiment snapshot taken while trials run; returns the first one that names a
    checkpoint of a running trial (the snapshot a driver killed at that moment would leave)."""
    found: dict[str, str] = {}
    while not stop.is_set() and not found:
        for state_file in experiment.glob("experiment_state-*.json"):
            try:
                text = state_file.read_text()
                trials = [(json.loads(a), json.loads(b)) for a, b in json.loads(text)["trial_data"]]
            except (OSError, ValueError, KeyError):
                continue
            if any(t["status"] == "RUNNING" and (r.get("last_result") or {}).get("checkpoint_dir_name")
                   for t, r in trials):  # fmt: skip
                found.update(name=state_file.name, text=text)
        time.sleep(0.01)
    return found


@pytest.mark.timeout(300)
def test_resume_when_the_snapshot_names_a_deleted_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tune deletes old checkpoints (num_to_keep=2) before its next snapshot, so a driver that dies in
    between leaves a snapshot naming a checkpoint that is gone, and Ray 2.60 then fails the trial on
    resume ("Could not recover from checkpoint as it does not exist", seen here after an
    unwritable-storage stop). The resume must continue from the trial's newest checkpoint instead."""
    argv = ["--optimizers", "sgd", "--smoke", "--model", "cnn", "--max-epochs", "10", "--scheduler", "fifo",
            "--name", "stale", "--storage-path", str(tmp_path)]  # fmt: skip
    experiment = tmp_path / "stale" / "search"
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        watcher = pool.submit(_early_snapshot, experiment, stop)
        assert adam_vs_sgd.main(argv) == 0
        stop.set()
        early = watcher.result()
    assert early, "no snapshot with a running trial was seen"
    # The driver "died" right after that snapshot: the trials went on and rotated their checkpoints.
    for state_file in experiment.glob("experiment_state-*.json"):
        state_file.unlink()
    (experiment / early["name"]).write_text(early["text"])
    stale = [
        (t, r["last_result"]["checkpoint_dir_name"])
        for t, r in ((json.loads(a), json.loads(b)) for a, b in json.loads(early["text"])["trial_data"])
        if t["status"] == "RUNNING" and (r.get("last_result") or {}).get("checkpoint_dir_name")
    ]
    gone = [t["trial_id"] for t, name in stale if not (experiment / t["relative_logdir"] / name).exists()]
    assert gone, "the named checkpoints still exist: nothing to repair"

    assert adam_vs_sgd.main(argv) == 0
    out = capsys.readouterr().out
    for trial_id in gone:
        assert f"trial {trial_id}: its last snapshot names a deleted checkpoint" in out
    trials = pd.read_csv(tmp_path / "stale" / "report" / "trials.csv")
    assert set(trials["status"]) == {"completed"} and (trials["epochs"] == 10).all()
