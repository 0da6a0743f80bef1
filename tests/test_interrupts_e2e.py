"""Stopping a study and resuming it, end to end (issue 24, items 1-3), with the signals sent at known points
(trainables.faults' driver markers), not after a sleep:

- an unfused study stopped after every optimizer's first result, before Tune had created all its trials,
  resumes every trial with its real configuration (Optuna; a user's model that cannot fuse);
- SIGTERM to the whole process group (what `timeout` and `kill -- -PGID` send), which also stops the local
  Ray cluster the driver started, ends at once with exit 143 and the hint, and the study resumes;
- a Ctrl-C while the script imports, one outside Tune, and a second one are each one line, exit 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from optsweep.trainables import faults

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "adam_vs_sgd.py"
OPTIMIZERS = ("adam", "sgd")
SMALL = ["--smoke", "--optimizers", ",".join(OPTIMIZERS), "--num-samples", "3", "--seeds", "1"]
SMALL += ["--max-epochs", "6", "--name", "stopped"]
WAIT_S = 300


def _start(argv: list[str], fault_dir: Path, *extra: str) -> subprocess.Popen[str]:
    """The study's script as a user starts it, in its own process group, with this test's fault markers."""
    return subprocess.Popen(
        [sys.executable, *extra, str(SCRIPT), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, faults.ENV: str(fault_dir)},
    )


def _finish(driver: subprocess.Popen[str]) -> str:
    try:
        return driver.communicate(timeout=WAIT_S)[0]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)


def _created_trials(experiment: Path, optimizer: str) -> int:
    state = json.loads(next((experiment / "search").glob("experiment_state-*.json")).read_text())
    return sum(json.loads(trial)["config"]["optimizer"] == optimizer for trial, _ in state["trial_data"])


def _search_trials(experiment: Path) -> Any:
    import pandas as pd

    trials = pd.read_csv(experiment / "report" / "trials.csv")
    return trials[trials["stage"] == "search"] if "stage" in trials.columns else trials


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "variant",
    [["--search", "optuna"], ["--task", f"{REPO / 'tests' / 'dropout_task.py'}:build_task"]],
    ids=["optuna", "model-that-cannot-fuse"],
)
def test_an_unfused_study_stopped_early_resumes_every_trial_with_its_configuration(
    ray_session: None, tmp_path: Path, variant: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from optsweep.sweeps import adam_vs_sgd

    # No early stopping and 12 epochs: a trial frees its slot (so that Tune creates the next one) only when
    # it ends, 11 epochs after the study's first result, when the Ctrl-C comes. Until then each optimizer
    # has created at most its running and its one waiting trial (Tune creates them lazily): the rest are
    # created after the restore. (Under early stopping a trial paused at the first rung, epoch 1, freed
    # its slot at once, and on a loaded machine every trial existed before the Ctrl-C took effect.)
    argv = [*SMALL, *variant, "--scheduler", "fifo", "--max-epochs", "12", "--storage-path", str(tmp_path)]
    experiment = tmp_path / "stopped"
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    faults.signal_marker(fault_dir, signal.SIGINT, "group", results=1, scope="any").touch()
    driver = _start([*argv, "--address", ray.get_runtime_context().gcs_address], fault_dir)
    out = _finish(driver)
    assert driver.returncode == 130, out
    assert f"Run the same command again to resume {experiment}" in out
    assert " unfused: " in out  # why, once per reason
    planned = 3  # configurations x seeds, per optimizer
    assert any(_created_trials(experiment, o) < planned for o in OPTIMIZERS), "every trial existed already"

    assert adam_vs_sgd.main(argv) == 0
    resumed = capsys.readouterr().out
    assert "Resuming the search" in resumed, resumed
    trials = _search_trials(experiment)
    assert sorted(trials["optimizer"]) == sorted(OPTIMIZERS * planned)
    assert set(trials["status"]) <= {"completed", "stopped_early", "diverged"}, trials
    assert trials["lr"].map(lambda v: isinstance(v, float)).all()
    assert sorted(trials["config_id"].unique()) == [
        f"{o}-c0{n}" for o in sorted(OPTIMIZERS) for n in (1, 2, 3)
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_to_the_process_group_ends_at_once_with_the_hint_and_the_study_resumes(
    ray_session: None, tmp_path: Path
) -> None:
    from optsweep.sweeps import adam_vs_sgd

    argv = [*SMALL, "--no-fuse", "--storage-path", str(tmp_path)]
    experiment = tmp_path / "stopped"
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    faults.signal_marker(fault_dir, signal.SIGTERM, "group", results=1).touch()
    driver = _start(argv, fault_dir)  # its own local Ray: its processes share the driver's process group
    out = _finish(driver)
    assert driver.returncode == 143, out
    assert "Ray's local processes were stopped by the same signal" in out
    assert f"Run the same command again to resume {experiment}" in out
    assert "Failed to connect to GCS" not in out

    assert adam_vs_sgd.main(argv) == 0
    trials = _search_trials(experiment)
    assert len(trials) == 2 * 3 and set(trials["status"]) <= {"completed", "stopped_early", "diverged"}


@pytest.mark.timeout(120)
def test_a_ctrl_c_while_the_script_imports_is_one_line(tmp_path: Path) -> None:
    # -X importtime writes a line as each module finishes importing: once one after sweeps.startup has,
    # its handlers are in place, and torch and Ray are still to come (seconds).
    driver = subprocess.Popen(
        [sys.executable, "-X", "importtime", str(SCRIPT), "--smoke", "--storage-path", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert driver.stderr is not None
        seen_startup = False
        for line in driver.stderr:
            if seen_startup and "import time:" in line:
                break
            seen_startup = seen_startup or line.rstrip().endswith("sweeps.startup")
        os.killpg(driver.pid, signal.SIGINT)
        rest = driver.stderr.read()
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    said = [line for line in rest.splitlines() if line.strip() and "import time:" not in line]
    assert driver.returncode == 130, rest
    assert said == ["Interrupted (SIGINT)."], rest


STUDY_LIKE = """
import contextlib, sys, time
from optsweep.sweeps import startup
from optsweep.sweeps.cluster import interrupts
startup.begin()
with interrupts.StopOnSignal(hint="Run the same command again to resume X."):
    with interrupts.tune_running() if sys.argv[1] == "in-tune" else contextlib.nullcontext():
        print("ready", flush=True)
        time.sleep(120)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["outside-tune", "in-tune"])
def test_a_signal_tune_cannot_take_ends_the_script_at_once_with_the_hint(tmp_path: Path, where: str) -> None:
    """Outside Tune (e.g. while Ray starts) the first signal, inside Tune the second one, end the script
    at once: no traceback, no 'Exception ignored in' from whatever Ray or logging was doing."""
    script = tmp_path / "study_like.py"
    script.write_text(STUDY_LIKE)
    driver = subprocess.Popen(
        [sys.executable, str(script), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "ready"
        os.killpg(driver.pid, signal.SIGINT)
        if where == "in-tune":
            assert "stopping the study after saving its state" in driver.stdout.readline() + (
                driver.stdout.readline()
            )
            os.killpg(driver.pid, signal.SIGINT)
        out = driver.communicate(timeout=60)[0]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, out
    assert out.strip().splitlines()[-1] == "Interrupted (SIGINT). Run the same command again to resume X."
    assert "Traceback" not in out and "Exception ignored" not in out
    if where == "in-tune":
        assert "SIGINT again: stopping now, without a last snapshot." in out
