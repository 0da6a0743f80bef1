"""Study runner decisions that need no running Ray: local Ray stays closed, shared storage on clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from sweeps import adam_vs_sgd, cli, study


def _args(tmp_path: Path, *argv: str) -> cli.StudyArgs:
    return cli.parse([*argv, "--storage-path", str(tmp_path)], "t", "t", adam_vs_sgd.DEFAULTS)


def test_local_ray_starts_with_the_dashboard_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    study._connect_ray(_args(tmp_path))
    assert calls == [{"include_dashboard": False, "log_to_driver": False, "logging_level": 30}]
    study._connect_ray(_args(tmp_path, "--address", "auto"))
    assert calls[-1]["address"] == "auto" and "include_dashboard" not in calls[-1]


def _fake_cluster(monkeypatch: pytest.MonkeyPatch, hosts: list[str], gpus: float = 0.0) -> None:
    nodes = [{"Alive": True, "NodeManagerAddress": host} for host in hosts]
    monkeypatch.setattr(ray, "nodes", lambda: [*nodes, {"Alive": False, "NodeManagerAddress": "10.9.9.9"}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": gpus})


def test_multi_host_cluster_needs_shared_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cluster(monkeypatch, ["10.0.0.1", "10.0.0.2"])
    with pytest.raises(cli.UsageError, match="spans 2 hosts.*must be shared storage"):
        study._check_cluster(_args(tmp_path, "--address", "auto"))
    remote = cli.StudyArgs(name="x", storage_path="s3://bucket/optsweep", address="auto")
    study._check_cluster(remote)  # shared storage: fine


def test_nodes_on_one_host_may_share_a_local_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cluster(monkeypatch, ["127.0.0.1", "127.0.0.1"])
    study._check_cluster(_args(tmp_path, "--address", "auto"))


def test_too_few_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_cluster(monkeypatch, ["127.0.0.1"], gpus=1.0)
    args = cli.StudyArgs(name="x", storage_path=str(tmp_path), gpus_per_worker=1.0, workers_per_trial=2)
    with pytest.raises(cli.UsageError, match="needs 2 GPUs but the local Ray has 1"):
        study._check_cluster(args)
    # On a cluster the autoscaler may still add GPU nodes: a note, not an error.
    study._check_cluster(
        cli.StudyArgs(name="x", storage_path=str(tmp_path), gpus_per_worker=4.0, address="auto")
    )
    assert "trials wait until the autoscaler adds GPU nodes" in capsys.readouterr().out
