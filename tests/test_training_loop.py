"""The training loop in a plain process (LocalSession): learning, resume, divergence, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from optsweep.trainables import checkpoints, data, loop, sessions
from optsweep.trainables.config import TrainConfig
from optsweep.vocabulary import DEFAULT_TARGET

TIMING_KEYS = {"epoch_time_s", "samples_per_s"}


def _without_timing(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in reports]


def test_mlp_learns_digits() -> None:
    session = sessions.LocalSession()
    last = loop.train(TrainConfig(optimizer="adam", hparams={"lr": 3e-3}, max_epochs=10), session)
    assert [r["epoch"] for r in session.reports] == list(range(1, 11))
    assert last["val_acc"] > 0.9  # chance is 0.1
    assert last["test_acc"] > 0.9
    assert session.reports[-1]["train_loss"] < session.reports[0]["train_loss"]
    assert all(not r["diverged"] for r in session.reports)
    assert all(0 <= r["test_acc"] <= 1 for r in session.reports)  # every epoch: early-stopped trials have one


def test_cnn_with_batchnorm_and_a_schedule_trains() -> None:
    config = TrainConfig(
        optimizer="sgd",
        hparams={"lr": 0.05, "momentum": 0.9, "nesterov": True},
        schedule="warmup_cosine",
        task_args={"model": "cnn"},
        max_epochs=2,
        grad_clip=1.0,
    )
    session = sessions.LocalSession()
    last = loop.train(config, session)
    assert last["val_acc"] > 0.5
    assert session.reports[0]["lr"] < 0.05  # still warming up in the first epoch


class _Interrupted(Exception):
    pass


class _DiesAfter(sessions.LocalSession):
    """A session whose process 'dies' right after reporting epoch `epoch` (its checkpoint is saved)."""

    def __init__(self, root: Path, epoch: int) -> None:
        super().__init__(root)
        self.die_after = epoch

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        super().report(metrics, checkpoint_dir)
        if metrics["epoch"] == self.die_after:
            raise _Interrupted


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_restart_after_epoch_k_continues_with_identical_metrics(tmp_path: Path, schedule: str) -> None:
    config = TrainConfig(
        optimizer="sgd", hparams={"lr": 0.05, "momentum": 0.9}, schedule=schedule, max_epochs=6, seed=3
    )
    straight = sessions.LocalSession(tmp_path / "straight")
    loop.train(config, straight)

    with pytest.raises(_Interrupted):
        loop.train(config, _DiesAfter(tmp_path / "resumed", epoch=3))
    resumed = sessions.LocalSession(tmp_path / "resumed")
    loop.train(config, resumed)

    assert [r["epoch"] for r in resumed.reports] == [4, 5, 6]
    assert resumed.reports[0]["resumed_from_epoch"] == 3 and resumed.reports[0]["unusable_checkpoints"] == 0
    resumed.reports[0].pop("resumed_from_epoch"), resumed.reports[0].pop("unusable_checkpoints")
    assert _without_timing(resumed.reports) == _without_timing(straight.reports[3:])


def test_diverging_run_stops_at_once_with_finite_sentinels() -> None:
    session = sessions.LocalSession()
    last = loop.train(TrainConfig(optimizer="sgd", hparams={"lr": 1e4}, max_epochs=20), session)
    assert len(session.reports) == 1
    assert last["diverged"] is True
    assert last["val_acc"] == DEFAULT_TARGET.worst  # finite, and worse than any real accuracy
    assert last["best_val_acc"] == DEFAULT_TARGET.worst  # it never had a valid epoch
    assert all(math.isfinite(v) for v in last.values() if isinstance(v, float))
    assert "test_acc" not in last


def test_explosion_past_the_bound_counts_as_divergence() -> None:
    session = sessions.LocalSession()
    config = TrainConfig(optimizer="sgd", hparams={"lr": 0.05}, max_epochs=3, divergence_loss=1e-3)
    loop.train(config, session)
    assert session.reports[-1]["diverged"] is True


def _three_checkpoints(root: Path) -> sessions.LocalSession:
    session = sessions.LocalSession(root)
    loop.train(TrainConfig(optimizer="adam", hparams={"lr": 1e-3}, max_epochs=3), session)
    return session


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_digest", "delete"])
def test_damaged_checkpoint_is_never_loaded_and_the_previous_one_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    session = _three_checkpoints(tmp_path)
    state_file = tmp_path / "checkpoint_000003" / checkpoints.STATE_FILE
    payload = state_file.read_bytes()
    if damage == "truncate":
        state_file.write_bytes(payload[: len(payload) // 2])
    elif damage == "flip_byte":
        middle = len(payload) // 2
        state_file.write_bytes(payload[:middle] + bytes([payload[middle] ^ 0xFF]) + payload[middle + 1 :])
    elif damage == "drop_digest":
        state_file.with_name(state_file.name + ".sha256").unlink()
    else:
        state_file.unlink()

    with pytest.raises(checkpoints.CorruptCheckpointError):
        checkpoints.load(state_file.parent, rank=0)
    found = session.latest_checkpoint()
    assert found.state["epoch"] == 2
    assert found.unusable == ["checkpoint_000003"]
    err = capsys.readouterr().err
    assert "checkpoint_000003 is unusable" in err
    assert "resuming from checkpoint checkpoint_000002" in err


def test_no_usable_checkpoint_means_a_fresh_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _three_checkpoints(tmp_path)
    for state_file in tmp_path.glob(f"checkpoint_*/{checkpoints.STATE_FILE}"):
        state_file.write_bytes(b"garbage")
    session = sessions.LocalSession(tmp_path)
    loop.train(TrainConfig(optimizer="adam", hparams={"lr": 1e-3}, max_epochs=4), session)
    assert [r["epoch"] for r in session.reports] == [1, 2, 3, 4]
    assert session.reports[0]["unusable_checkpoints"] == 3 and session.reports[0]["resumed_from_epoch"] == 0
    err = capsys.readouterr().err
    assert err.count("is unusable") == 3
    assert "none of the 3 checkpoint(s) is usable; training starts from scratch" in err


def test_checkpoint_files_hold_only_tensors_and_plain_types(tmp_path: Path) -> None:
    _three_checkpoints(tmp_path)
    directory = tmp_path / "checkpoint_000001"
    for name in (checkpoints.STATE_FILE, checkpoints.rng_file(0)):
        torch.load(directory / name, weights_only=True)  # raises on anything else
    assert checkpoints.load(directory, rank=0)[0]["epoch"] == 1
    assert not list(tmp_path.rglob("*.tmp"))


class _RankSession(sessions.LocalSession):
    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size


def test_ranks_train_on_disjoint_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[int, list[int]] = {}
    real_make_loader = data.make_loader

    def recording_make_loader(dataset: Any, batch_size: int, **kwargs: Any) -> data.ShardedLoader:
        built = real_make_loader(dataset, batch_size, **kwargs)
        if kwargs.get("shuffle"):
            built.set_epoch(1)
            seen[kwargs["rank"]] = list(built.sampler)
        return built

    monkeypatch.setattr(data, "make_loader", recording_make_loader)
    config = TrainConfig(optimizer="sgd", hparams={"lr": 0.01}, max_epochs=1)
    for rank in (0, 1):
        loop.train(config, _RankSession(rank, world_size=2))
    n_train = len(data.load_splits("digits").train)
    assert set(seen[0]).isdisjoint(seen[1]) or len(set(seen[0]) & set(seen[1])) <= 1  # padding to even
    assert set(seen[0]) | set(seen[1]) == set(range(n_train))


def test_trial_config_is_flat_and_typos_are_errors() -> None:
    config = TrainConfig.from_trial_config(
        {
            "optimizer": "adam",
            "seed": 2,
            "lr": 0.01,
            "beta1": 0.8,
            "schedule": "cosine",
            "__trial_index__": 1,
            "settings": {"max_epochs": 3, "task_args": {"model": "cnn"}},
        }
    )
    assert config.hparams == {"lr": 0.01, "beta1": 0.8}
    assert (config.seed, config.max_epochs, config.task_args, config.schedule) == (
        2,
        3,
        {"model": "cnn"},
        "cosine",
    )
    with pytest.raises(ValueError, match="Unknown setting.*max_epoch.*valid:"):
        TrainConfig.from_trial_config({"settings": {"max_epoch": 3}})
    with pytest.raises(ValueError, match="max_epochs.*must be int or None"):
        TrainConfig(max_epochs="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="amp.*must be bool or None"):
        TrainConfig(amp=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers: 0"):
        TrainConfig(workers=0)
    with pytest.raises(ValueError, match="Invalid task: ''"):
        TrainConfig(task="")
    with pytest.raises(ValueError, match="unknown task 'imagenet'; built-in tasks: digits"):
        loop.train(TrainConfig(task="imagenet"), sessions.LocalSession())


def test_ray_checkpoints_fall_back_to_their_older_siblings(tmp_path: Path) -> None:
    """The Tune/Train sessions get the latest Ray Checkpoint; a damaged one is skipped for the one before."""
    from ray.train import Checkpoint

    _three_checkpoints(tmp_path)
    (tmp_path / "checkpoint_000003" / checkpoints.STATE_FILE).write_bytes(b"truncated")
    found = sessions._load_first_valid(
        sessions._ray_checkpoint_candidates(Checkpoint.from_directory(str(tmp_path / "checkpoint_000003"))),
        rank=0,
    )
    assert found.state is not None and found.state["epoch"] == 2
    assert found.unusable == ["checkpoint_000003"]
