"""Issue 11 end to end on the shared local Ray: a damaged or planted experiment is repaired or refused,
worker groups that fill the node exactly run (they hung), Ctrl-C stops the whole study resumably and the
resumed report reads the state Tune restored (with ASHA-stopped trials), with corrected resources."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from optsweep.sweeps import adam_vs_sgd

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTSWEEP_STATE_DIR", str(tmp_path / "optsweep-state"))


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.timeout(400)
def test_a_damaged_or_planted_experiment_is_refused_or_started_afresh_never_run_with_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--smoke", "--optimizers", "sgd", "--name", "damaged", "--storage-path", str(tmp_path)]
    experiment = tmp_path / "damaged" / "search"
    assert adam_vs_sgd.main(argv) == 0
    capsys.readouterr()

    # A planted tuner.pkl (anyone who can write the storage path could plant one) is never unpickled.
    tuner = experiment / "tuner.pkl"
    original = tuner.read_bytes()
    marker = tmp_path / "code-ran"
    tuner.write_bytes(pickle.dumps(_Planted(marker)))
    assert adam_vs_sgd.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tuner.pkl is not the file this study wrote" in err
    assert not marker.exists()
    tuner.write_bytes(original)

    # The experiment state Tune would restore is gone, but trials have results: refused, nothing lost.
    for state in experiment.glob("experiment_state-*.json"):
        state.unlink()
    assert adam_vs_sgd.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume search" in err and "move" in err
    assert len(list(experiment.glob("*/result.json"))) == 2

    # Killed right after Tune created the experiment (no trial started): it starts afresh, and every
    # trial is an sgd trial with its sampled configuration (Ray would have trained `{}`: Adam defaults).
    for trial_dir in experiment.glob("run_trial_*"):
        shutil.rmtree(trial_dir)
    assert adam_vs_sgd.main(argv) == 0
    assert "no trial had started; starting the search afresh" in capsys.readouterr().out
    trials = pd.read_csv(tmp_path / "damaged" / "report" / "trials.csv")
    assert len(trials) == 2 and set(trials["optimizer"]) == {"sgd"}
    assert trials["lr"].notna().all() and trials["momentum"].notna().all()
    assert set(trials["status"]) <= {"completed", "stopped_early"}  # (ASHA may stop one after epoch 1)


@pytest.mark.timeout(420)
def test_workers_that_fill_the_node_exactly_run_and_ones_that_never_fit_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test session's Ray has 2 CPUs. Before the fix each multi-worker trial's driver reserved 0.01
    CPU, so 2 workers x 1 CPU never fitted and the sweep hung (this test would time out)."""
    base = ["--optimizers", "sgd", "--num-samples", "1", "--seeds", "1", "--confirm-seeds", "0",
            "--max-epochs", "1", "--storage-path", str(tmp_path)]  # fmt: skip
    assert adam_vs_sgd.main([*base, "--workers-per-trial", "3", "--name", "three"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers-per-trial 3" in err and "wait forever" in err
    assert not (tmp_path / "three" / "search").exists()  # refused before any trial

    assert adam_vs_sgd.main([*base, "--workers-per-trial", "2", "--name", "exact"]) == 0
    trials = pd.read_csv(tmp_path / "exact" / "report" / "trials.csv")
    assert list(trials["status"]) == ["completed"]


def _stopped_early(experiment: Path, max_epochs: int) -> list[Path]:
    stopped = []
    for result in experiment.glob("search/*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines and lines[-1].get("done") is True and lines[-1]["epoch"] < max_epochs:
            stopped.append(result.parent)
    return stopped


@pytest.mark.timeout(600)
def test_ctrl_c_stops_the_whole_study_and_the_resume_reports_asha_stopped_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    max_epochs = 9
    argv = ["--optimizers", "sgd,adam", "--num-samples", "6", "--seeds", "1", "--confirm-seeds", "0",
            "--max-epochs", str(max_epochs),
            "--model", "cnn", "--schedules", "constant", "--name", "interrupted",
            "--storage-path", str(tmp_path)]  # fmt: skip
    experiment = tmp_path / "interrupted"
    driver = subprocess.Popen(
        [sys.executable, adam_vs_sgd.__file__, *argv, "--address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while (
        time.monotonic() < deadline and driver.poll() is None and not _stopped_early(experiment, max_epochs)
    ):
        time.sleep(0.05)
    assert driver.poll() is None, driver.communicate()[0].decode()
    assert _stopped_early(experiment, max_epochs), "ASHA stopped no trial in time"
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    out = driver.communicate(timeout=120)[0].decode()
    assert driver.returncode == 130, out
    assert f"Run the same command again to resume {experiment}" in out
    assert not (experiment / "report").exists()  # the study stopped; no report of a half study
    # One Ctrl-C stops the whole study (its optimizers run side by side): nothing starts after it.
    assert "Starting" not in out.split("SIGINT: stopping")[1], out
    assert len(list(experiment.glob("*/*/result.json"))) < 12

    # Resumed with corrected resources: they reach the unfinished trials instead of being ignored.
    assert adam_vs_sgd.main([*argv, "--cpus-per-worker", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Resuming the search" in out and "unfinished trial(s) resume with this run's resources" in out
    trials = pd.read_csv(experiment / "report" / "trials.csv")
    assert len(trials) == 12 and trials["trial_id"].is_unique
    assert "incomplete" not in set(trials["status"])
    assert "stopped_early" in set(trials[trials["optimizer"] == "sgd"]["status"])
    summary = pd.read_csv(experiment / "report" / "summary.csv")
    assert set(summary["optimizer"]) == {"sgd", "adam"}
    assert (trials["cpus_per_worker"] == 0.5).any()  # the resumed and the new trials


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
_LOCAL_RAY = """
import sys, ray
from optsweep.sweeps.cluster import ray_connect
print(ray_connect.connect(None, "local"), flush=True)
ray.get(ray.remote(lambda: 1).remote())  # a worker process, with its own server
print("GCS", ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test is done
"""
_JOIN = """
import ray
try:
    ray.init(address="{address}", log_to_driver=False)
    print("JOINED")
except Exception as error:
    print("REFUSED", type(error).__name__)
"""


@pytest.mark.timeout(300)
def test_a_local_ray_listens_on_loopback_only_and_refuses_clients_without_its_private_token(
    tmp_path: Path,
) -> None:
    """Ray 2.60 binds its servers to every interface unless the node address is loopback; the study's
    local Ray is started that way. Its token must be private and really required."""
    import psutil

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)  # a user without a token yet
    repo = Path(adam_vs_sgd.__file__).parents[1]
    server = subprocess.Popen(
        [sys.executable, "-c", _LOCAL_RAY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=repo,
        text=True,
        start_new_session=True,
    )
    try:
        lines = [server.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert lines[0].startswith("Ray: started a local Ray on this machine"), lines
        address = lines[1].split()[1]
        token = tmp_path / ".ray" / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600  # and Ray uses it: it did not write its own
        processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        listening = {
            c.laddr.ip for p in processes for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN
        }
        assert listening and listening <= LOOPBACK, listening  # GCS, raylet, driver, workers
        # From the network (the machine's own outside address) nothing answers on the GCS port.
        port = int(address.rsplit(":", 1)[1])
        outside = [
            a.address
            for addrs in psutil.net_if_addrs().values()
            for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")
        ]
        for ip in outside:
            with pytest.raises(OSError), socket.create_connection((ip, port), timeout=5):
                pass
        # On this machine, a client needs the token (a client of a loopback Ray connects like one).
        client_env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
        join = [sys.executable, "-c", _JOIN.format(address=address)]
        owner = subprocess.run(join, env=client_env, capture_output=True, text=True, timeout=120)
        assert "JOINED" in owner.stdout, owner.stdout + owner.stderr[-2000:]
        intruder_env = {**client_env, "HOME": str(tmp_path / "intruder"), "RAY_AUTH_TOKEN": "0" * 32}
        intruder = subprocess.run(join, env=intruder_env, capture_output=True, text=True, timeout=120)
        assert "REFUSED" in intruder.stdout and "JOINED" not in intruder.stdout, intruder.stdout
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


@pytest.mark.timeout(300)
def test_sigterm_stops_the_study_resumably_with_the_hint(tmp_path: Path) -> None:
    """What `kill`, a job scheduler or a container stop sends (it aborted with exit -6 and no hint)."""
    import ray

    argv = ["--smoke", "--optimizers", "sgd,adam", "--model", "cnn", "--max-epochs", "8", "--name", "term",
            "--storage-path", str(tmp_path), "--address", ray.get_runtime_context().gcs_address]  # fmt: skip
    driver = subprocess.Popen(
        [sys.executable, adam_vs_sgd.__file__, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 200
    while (
        time.monotonic() < deadline
        and driver.poll() is None
        and not list(tmp_path.glob("term/search/*/result.json"))
    ):
        time.sleep(0.05)
    assert driver.poll() is None, driver.communicate()[0].decode()
    driver.send_signal(signal.SIGTERM)
    out = driver.communicate(timeout=120)[0].decode()
    assert driver.returncode == 143, out
    assert f"Run the same command again to resume {tmp_path / 'term'}" in out
    assert "Tuner.restore(" not in out  # Tune's own hint, which is not how a study resumes
    assert "Starting" not in out.split("SIGTERM: stopping")[1], out
