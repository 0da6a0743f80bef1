"""Real multi-node Ray on this machine (issue 6): the sweep CLI against two Ray nodes.

- `ray start`, as a real cluster's nodes run it: a head and a second node (1 CPU each, each with its
  own --temp-dir, token auth). A sweep joins with --address; its trials run on both nodes.
- `ray.cluster_utils.Cluster`: the second node is removed in the middle of a sweep. Its trial is
  re-queued on the head, resumes from its last checkpoint, and the report loses nothing.

Every Ray process here runs outside this pytest process, which may hold the session's own Ray
(conftest's `ray_session`):
- a sweep driver is a process of its own (one `ray.init` per process), so it runs as
  `python sweeps/adam_vs_sgd.py --address ...`, as a user runs it;
- a `Cluster` created in this process would break the session's Ray: its head `Node` repoints the
  process-wide internal KV client (ray/_private/node.py, `_initialize_internal_kv`) at the test
  cluster's GCS and `Cluster.shutdown()` resets it to None (ray/cluster_utils.py). It would also put
  a SIGTERM handler on pytest. So the Cluster lives in a helper process: this file run as a script.

`RAY_TMPDIR` points every process at the test's own directory. `Cluster` writes its address to
ray_current_cluster in Ray's default temp dir (/tmp/ray without RAY_TMPDIR), and a plain `ray.init()`
anywhere on the machine reads that file and would join the test cluster. Each process starts in a new
session; teardown kills every process still in those sessions, by pid. Never `ray stop`: it kills
every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

from optsweep import analysis
from optsweep.trainables import faults

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "adam_vs_sgd.py"
SERVE_CLUSTER = "--serve-cluster"


# ----------------------------------------------------------------------------- processes we own


class Sessions:
    """Processes started in sessions of their own. `stop()` ends them and then kills every process
    still in one of those sessions (Ray's workers leave their parent's process group, not its
    session), so it stops exactly what the test started, even what was reparented."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([str(a) for a in args], start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def members(self, proc: subprocess.Popen | None = None) -> list[psutil.Process]:
        sids = {p.pid for p in ([proc] if proc else self.procs)}
        found = []
        for candidate in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(candidate.pid) in sids:
                    found.append(candidate)
        return found

    def stop(self, grace_s: float = 30) -> None:
        for proc in reversed(self.procs):  # the sweep before the nodes it runs on
            if proc.poll() is None:
                proc.terminate()  # `ray start --block` stops its node's processes on SIGTERM
        deadline = time.monotonic() + grace_s
        for proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        left = self.members()
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(left, timeout=30)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@pytest.fixture
def sessions() -> Iterator[Sessions]:
    owned = Sessions()
    try:
        yield owned
    finally:
        owned.stop()


@pytest.fixture
def ray_dir() -> Iterator[Path]:
    """Short, because Ray's unix sockets live below it (pytest's tmp_path can be too long)."""
    path = Path(tempfile.mkdtemp(prefix="osm", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(ray_dir: Path) -> dict[str, str]:
    """What every node and driver of a test cluster gets: token auth with a token of its own (a file,
    as cluster.yaml's start commands use), and RAY_TMPDIR inside the test's directory."""
    token = ray_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    # Not the session's RAY_* (RAY_AUTH_MODE, RAY_ADDRESS...) nor its crash markers (conftest's fault_dir).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != faults.ENV}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_TMPDIR=str(ray_dir),
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def raylet_node_id(sessions: Sessions, proc: subprocess.Popen) -> str:
    """The node id of the raylet that `proc` (a `ray start`) runs: it is on the raylet's command line."""
    for process in sessions.members(proc):
        with contextlib.suppress(psutil.Error):
            cmdline = process.cmdline()
            if cmdline and Path(cmdline[0]).name == "raylet":
                (node_id,) = [a.split("=", 1)[1] for a in cmdline if a.startswith("--node_id=")]
                return node_id
    raise AssertionError(f"no raylet among the processes of `ray start` (pid {proc.pid})")


# -------------------------------------------------------------------------------- reading a sweep


def result_lines(result_json: Path) -> list[dict]:
    """The complete lines of a trial's result.json (the driver may be writing the last one)."""
    lines = []
    for line in result_json.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            lines.append(json.loads(line))
    return lines


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} is missing)"


def wait_for_sweep(sweep: subprocess.Popen, timeout_s: float, log: Path) -> int:
    try:
        return sweep.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the sweep did not finish in {timeout_s} s:\n{tail(log)}") from None


# --------------------------------------------------------------- 1. a real two-node `ray start` cluster


def ray_cli() -> str:
    ray = Path(sys.executable).with_name("ray")
    return str(ray) if ray.exists() else shutil.which("ray")


# Port 0: Ray picks free ports itself, so nothing collides with the session's Ray or anyone else's
# (no pick-then-bind race either). The worker ports would otherwise come from `ray start`'s fixed
# 10002-19999 range, shared with every other `ray start` here; 0/0 means random, as in ray.cluster_utils.
RANDOM_PORTS = [
    f"--{flag}=0"
    for flag in (
        "node-manager-port",
        "object-manager-port",
        "metrics-export-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "min-worker-port",
        "max-worker-port",
    )
]


def start_node(sessions: Sessions, env: dict[str, str], temp_dir: Path, log: Path, *args: str) -> str:
    """`ray start --block ...`; waits until it has started (it then writes its temp dir's
    ray_current_cluster) and returns the GCS address it wrote there."""
    with open(log, "w") as out:
        proc = sessions.popen(
            [ray_cli(), "start", "--block", "--num-cpus=1", f"--temp-dir={temp_dir}", *RANDOM_PORTS, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    address_file = temp_dir / "ray_current_cluster"
    deadline = time.monotonic() + 120
    while not (address_file.exists() and address_file.read_text().strip()):
        assert proc.poll() is None, f"`ray start` exited with {proc.returncode}:\n{tail(log)}"
        assert time.monotonic() < deadline, f"`ray start` did not come up in 120 s:\n{tail(log)}"
        time.sleep(0.2)
    return address_file.read_text().strip()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_smoke_sweep_on_a_two_node_ray_start_cluster_runs_trials_on_both_nodes(
    sessions: Sessions, env: dict[str, str], ray_dir: Path, tmp_path: Path
) -> None:
    head_dir, worker_dir = ray_dir / "head", ray_dir / "worker"
    gcs = start_node(
        sessions,
        env,
        head_dir,
        tmp_path / "head.log",
        "--head",
        "--port=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
    )
    address = f"127.0.0.1:{gcs.rsplit(':', 1)[1]}"  # Ray registers the nodes with the host's IP
    start_node(sessions, env, worker_dir, tmp_path / "worker.log", f"--address={address}")
    head_proc, worker_proc = sessions.procs
    nodes = {raylet_node_id(sessions, head_proc): "head", raylet_node_id(sessions, worker_proc): "worker"}
    assert len(nodes) == 2

    # --smoke alone (digits MLP, 2 epochs) ran every trial on the head here: a trial trains in ~0.1 s
    # and a trial actor takes 10-20 s to start on this machine, so Tune reused the head's actor for
    # all of them before the second node's actor was up. 5 CNN epochs (~2.5 s a trial) did so once
    # in three runs. With 20 epochs the head alone would need 20-40 s for the four trials: time for
    # the second node's actor to come up and take its share.
    argv = ["--smoke", "--optimizers", "sgd", "--num-samples", "4", "--model", "cnn", "--max-epochs", "20"]
    argv += ["--scheduler", "fifo", "--name", "two-nodes", "--storage-path", tmp_path, "--address", address]
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        sweep = sessions.popen([sys.executable, SWEEP, *argv], env=env, stdout=out, stderr=subprocess.STDOUT)
    assert wait_for_sweep(sweep, 180, log) == 0, tail(log)

    trials = pd.read_csv(tmp_path / "two-nodes" / "report" / "trials.csv")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}
    ran_on = trials["node_id"].map(nodes)
    assert ran_on.notna().all(), f"node ids {set(trials['node_id'])} are not the nodes started: {nodes}"
    assert set(ran_on) == {"head", "worker"}, trials[["trial_id", "node_id"]].to_string()
    # Every epoch of a trial ran where its trial did (no trial moved: nothing failed).
    for result_json in (tmp_path / "two-nodes" / "search").glob("*/result.json"):
        assert len({line["node_id"] for line in result_lines(result_json)}) == 1, result_json


# ------------------------------------------------- 2. a node removed mid-sweep (ray.cluster_utils)


def serve_cluster() -> None:
    """`python tests/test_multinode.py --serve-cluster`: a `ray.cluster_utils.Cluster` with a head and
    one more node (1 CPU each). Prints {"address", "head", "worker"} as one JSON line, then obeys stdin:
    "remove-worker" or "kill-worker" removes the second node (and prints {"removed": node id}); end
    of input shuts the cluster down."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "dashboard_agent_listen_port": 0},
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ids = {"address": cluster.address, "head": cluster.head_node.node_id, "worker": worker.node_id}
        print(json.dumps(ids), flush=True)
        for line in sys.stdin:
            if line.strip() in ("remove-worker", "kill-worker"):
                # remove-worker: SIGTERM, the node drains (a scale-down, a spot notice); kill-worker:
                # SIGKILL, the node is just gone (a crash, a pulled cable).
                cluster.remove_node(worker, allow_graceful=line.strip() == "remove-worker")
                print(json.dumps({"removed": worker.node_id}), flush=True)
    finally:
        cluster.shutdown()


def read_json_line(proc: subprocess.Popen, timeout_s: float, log: Path) -> dict:
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"no answer from the cluster process in {timeout_s} s:\n{tail(log)}")
    line = proc.stdout.readline()
    assert line, f"the cluster process exited ({proc.poll()}):\n{tail(log)}"
    return json.loads(line)


@pytest.fixture
def cluster(
    sessions: Sessions, env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen, dict]]:
    """The helper process that holds the Cluster, and its node ids. Teardown closes its stdin (it
    then runs `Cluster.shutdown()`); the `sessions` fixture kills whatever outlives that."""
    log = tmp_path / "cluster.log"
    with open(log, "w") as err:
        proc = sessions.popen(
            [sys.executable, __file__, SERVE_CLUSTER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        yield proc, read_json_line(proc, 120, log)
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)


def trial_midway_on(experiment: Path, node_id: str, max_epochs: int) -> tuple[Path, int] | None:
    """A trial running on `node_id` with 3 epochs (and their checkpoints) done and more than 3 to go:
    (its dir, its last epoch)."""
    for result_json in experiment.glob("*/*/result.json"):
        lines = result_lines(result_json)
        if lines and lines[-1].get("node_id") == node_id and 3 <= lines[-1]["epoch"] < max_epochs - 3:
            assert any(result_json.parent.glob("checkpoint_*")), "a reported epoch without its checkpoint"
            return result_json.parent, lines[-1]["epoch"]
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["remove-worker", "kill-worker"], ids=["drained", "killed"])
def test_trials_of_a_removed_node_resume_from_their_checkpoint_on_the_other_node(
    sessions: Sessions,
    cluster: tuple[subprocess.Popen, dict],
    env: dict[str, str],
    ray_dir: Path,
    tmp_path: Path,
    how: str,
) -> None:
    helper, ids = cluster
    head, worker = ids["head"], ids["worker"]
    max_epochs = 30  # CNN epochs of ~0.3 s: the node goes while its trial is mid-way
    argv = ["--optimizers", "sgd", "--num-samples", "2", "--seeds", "1", "--max-epochs", str(max_epochs)]
    argv += ["--confirm-seeds", "0"]  # the search's trials only
    argv += ["--model", "cnn", "--scheduler", "fifo", "--name", "lost-node", "--storage-path", tmp_path]
    argv += ["--address", ids["address"]]
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        sweep = sessions.popen([sys.executable, SWEEP, *argv], env=env, stdout=out, stderr=subprocess.STDOUT)
    experiment = tmp_path / "lost-node"

    deadline = time.monotonic() + 150
    while (found := trial_midway_on(experiment, worker, max_epochs)) is None:
        assert sweep.poll() is None, f"the sweep ended before a trial ran on the second node:\n{tail(log)}"
        assert time.monotonic() < deadline, f"no trial ran on the second node:\n{tail(log)}"
        time.sleep(0.1)
    trial_dir, epoch_at_removal = found
    helper.stdin.write(f"{how}\n")
    helper.stdin.flush()
    assert read_json_line(helper, 60, tmp_path / "cluster.log") == {"removed": worker}

    assert wait_for_sweep(sweep, 180, log) == 0, tail(log)
    trials = pd.read_csv(experiment / "report" / "trials.csv")
    assert len(trials) == 2 and trials["trial_id"].is_unique, trials.to_string()
    assert set(trials["status"]) == {"completed"}, trials[["trial_id", "status", "error_message"]]
    assert (trials["epochs"] == max_epochs).all()
    assert set(trials["node_id"]) == {head}  # every trial ended on the node that is left

    # The moved trial: epochs 1..k on the lost node, then it went on from its checkpoint on the head.
    lines = result_lines(trial_dir / "result.json")
    nodes = [line["node_id"] for line in lines]
    moved_at = nodes.index(head)
    assert set(nodes[:moved_at]) == {worker} and set(nodes[moved_at:]) == {head}, nodes
    before, after = [line["epoch"] for line in lines[:moved_at]], [line["epoch"] for line in lines[moved_at:]]
    assert before == list(range(1, len(before) + 1)) and len(before) >= epoch_at_removal
    assert 1 < after[0] <= before[-1] + 1, (before, after)  # from a checkpoint, not from scratch
    assert after == list(range(after[0], max_epochs + 1))
    # Its stderr (log_to_file=True) is not in its trial dir: Tune keeps it in the trial's working dir
    # in the Ray session dir of the node that ran it (a Cluster's nodes share one session dir).
    artifacts = ray_dir / "ray" / "session_latest" / "artifacts"
    (stderr_file,) = artifacts.glob(f"*/search/working_dirs/{trial_dir.name}/stderr")
    stderr = stderr_file.read_text()
    assert re.search(
        rf"optsweep: resuming from checkpoint checkpoint_\d+ \(epoch {after[0] - 1}\)", stderr
    ), stderr
    # ... and the report has each of its epochs once (for each member, when the trial is a fused group).
    curves = analysis.curves(experiment)
    moved = lines[0]["trial_id"]
    ids = {t for t in curves["trial_id"] if t == moved or str(t).startswith(f"{moved}-")}
    assert ids, sorted(set(curves["trial_id"]))
    for trial_id in ids:
        assert list(curves.loc[curves["trial_id"] == trial_id, "epoch"]) == list(range(1, max_epochs + 1))


if __name__ == "__main__" and sys.argv[1:] == [SERVE_CLUSTER]:
    serve_cluster()


# ------------------------------------------------ 3. a user's own code, from outside the repo (issue 10)

USER_PACKAGE = {
    "userpkg/__init__.py": "",
    "userpkg/nets.py": '''
from torch import nn


class TinyNet(nn.Module):
    """A model class the worker nodes can only know from the shipped package."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10))

    def forward(self, x):
        return self.body(x)
''',
    "my_task.py": """
from optsweep.trainables import builtin_tasks
from optsweep.trainables.tasks import Task

from userpkg.nets import TinyNet


def build_task(max_epochs: int = 100) -> Task:
    digits = builtin_tasks.TASKS["digits"]()
    return Task(name="userpkg-digits", model=TinyNet, data=digits.data, max_epochs=max_epochs)
""",
    "my_optimizer.py": """
import torch


class PlainSGD(torch.optim.SGD):
    search_space = {"lr": {"log_uniform": [0.01, 0.2]}, "momentum": {"uniform": [0.5, 0.9]}}
""",
}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_users_package_and_file_reach_the_workers_of_a_two_node_cluster(
    sessions: Sessions, env: dict[str, str], ray_dir: Path, tmp_path: Path
) -> None:
    """A task and an optimizer from files outside the repo (pickled by value), whose model comes from a
    local package imported by name (shipped as runtime_env py_modules), train on both nodes of a
    `ray start` cluster."""
    project = tmp_path / "project"
    for name, text in USER_PACKAGE.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    gcs = start_node(
        sessions,
        env,
        ray_dir / "head",
        tmp_path / "head.log",
        "--head",
        "--port=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
    )
    address = f"127.0.0.1:{gcs.rsplit(':', 1)[1]}"
    start_node(sessions, env, ray_dir / "worker", tmp_path / "worker.log", f"--address={address}")
    head_proc, worker_proc = sessions.procs
    nodes = {raylet_node_id(sessions, head_proc): "head", raylet_node_id(sessions, worker_proc): "worker"}

    argv = ["--task", "my_task.py:build_task", "--optimizers", "my_optimizer.py:PlainSGD"]
    # ~3-6 s a trial (100 epochs): the head alone would need longer for the six than the second node's
    # trial actor takes to start, so both nodes get trials (see the first test of this file).
    argv += ["--num-samples", "6", "--seeds", "1", "--confirm-seeds", "0", "--scheduler", "fifo"]
    argv += ["--name", "user-code"]
    argv += ["--storage-path", tmp_path / "results", "--address", address]
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        sweep = sessions.popen(
            [sys.executable, SWEEP, *argv], env=env, cwd=project, stdout=out, stderr=subprocess.STDOUT
        )
    assert wait_for_sweep(sweep, 240, log) == 0, tail(log)

    trials = pd.read_csv(tmp_path / "results" / "user-code" / "report" / "trials.csv")
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}, trials.to_string()
    assert set(trials["optimizer"]) == {"plainsgd"}
    assert set(trials["node_id"].map(nodes)) == {"head", "worker"}, trials[
        ["trial_id", "node_id"]
    ].to_string()
