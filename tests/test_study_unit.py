"""Study runner decisions that need no running Ray: local Ray stays closed, shared storage on clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from optsweep.errors import OptsweepError
from optsweep.sweeps import adam_vs_sgd, cli
from optsweep.sweeps.cluster import ray_connect
from optsweep.sweeps.runner import study
from optsweep.sweeps.spec import StudySpec


def _args(tmp_path: Path, *argv: str) -> StudySpec:
    return cli.parse([*argv, "--storage-path", str(tmp_path)], "t", "t", adam_vs_sgd.DEFAULTS)


def test_local_ray_starts_with_the_dashboard_off_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    _fake_cluster(monkeypatch, ["127.0.0.1"])
    address, source = ray_connect.resolve_address(None)
    assert ray_connect.connect(address, source) == (
        "Ray: started a local Ray on this machine (loopback only): 1 node(s), 8 CPUs, 0 GPUs"
    )
    assert calls == [{"include_dashboard": False, "log_to_driver": False, "logging_level": 30}]
    joined = ray_connect.connect("auto", "--address")
    assert joined.startswith("Ray: joined the cluster at auto (from --address)")
    assert calls[-1]["address"] == "auto" and "include_dashboard" not in calls[-1]


def _fake_cluster(monkeypatch: pytest.MonkeyPatch, hosts: list[str], gpus: float = 0.0) -> None:
    nodes = [{"Alive": True, "NodeManagerAddress": host} for host in hosts]
    monkeypatch.setattr(ray, "nodes", lambda: [*nodes, {"Alive": False, "NodeManagerAddress": "10.9.9.9"}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": gpus})


def test_multi_host_cluster_needs_shared_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cluster(monkeypatch, ["10.0.0.1", "10.0.0.2"])
    with pytest.raises(OptsweepError, match="spans 2 hosts.*must be shared storage"):
        study.check_cluster(_args(tmp_path, "--address", "auto"))
    remote = StudySpec(name="x", storage_path="s3://bucket/optsweep", address="auto")
    study.check_cluster(remote)  # shared storage: fine


def test_nodes_on_one_host_may_share_a_local_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cluster(monkeypatch, ["127.0.0.1", "127.0.0.1"])
    study.check_cluster(_args(tmp_path, "--address", "auto"))
