"""FusedGroup (trainables.fused): a fused group trained epoch by epoch goes on exactly as it would have
after a checkpoint and restore, and after some of its members are dropped (fp64, bit for bit)."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from test_fused import TIMING_KEYS, digits_task

from optsweep import vocabulary as v
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused import FusedGroup, train_fused
from optsweep.trainables.tasks import Task

CPU = torch.device("cpu")

SGD_MEMBERS = [
    # lr so small that validation accuracy stays put: the plateau schedule cuts the LR after epoch 5
    # (patience 3), so a checkpoint at epoch 2 must carry its count of bad epochs.
    {"hparams": {"lr": 1e-7, "momentum": 0.9}, "seed": 0, "schedule": "plateau"},
    {"hparams": {"lr": 0.02, "momentum": 0.5, "dampening": 0.1}, "seed": 1, "schedule": "cosine"},
    # lr so large that validation accuracy falls in epoch 3: a checkpoint at epoch 2 must carry the
    # best so far.
    {"hparams": {"lr": 2.0, "momentum": 0.8}, "seed": 2, "schedule": "step"},
    {"hparams": {"lr": 0.03, "momentum": 0.7}, "seed": 3, "schedule": "warmup_cosine"},
]
ADAM_MEMBERS = [
    {"hparams": {"lr": 1e-3}, "seed": 0, "schedule": "onecycle"},
    {"hparams": {"lr": 3e-3, "beta1": 0.8}, "seed": 1, "schedule": "exponential"},
    {"hparams": {"lr": 5e-4, "beta2": 0.99}, "seed": 2},
    {"hparams": {"lr": 2e-3}, "seed": 3, "schedule": "cosine"},
]

LARS_MEMBERS = [
    {"hparams": {"lr": 5.0, "momentum": 0.9, "weight_decay": 1e-4}, "seed": 0},
    {"hparams": {"lr": 2.0, "momentum": 0.8, "trust_coefficient": 2e-3}, "seed": 1, "schedule": "cosine"},
    {"hparams": {"lr": 8.0, "momentum": 0.7}, "seed": 2, "schedule": "plateau"},
]


def _configs(optimizer: str, members: list[dict[str, Any]], epochs: int) -> list[TrainConfig]:
    return [TrainConfig(optimizer=optimizer, max_epochs=epochs, **member) for member in members]


def _untimed(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key not in TIMING_KEYS}


def _run(group: FusedGroup, reports: dict[int, list[dict[str, Any]]], epochs: int | None = None) -> None:
    """Train `group` `epochs` epochs (None: to the end), adding each member's untimed metrics."""
    done = 0
    while not group.finished and (epochs is None or done < epochs):
        for k, metrics in group.run_epoch().items():
            reports.setdefault(k, []).append(_untimed(metrics))
        done += 1


def _through_bytes(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


CASES = {
    "sgd_momentum_mlp": ("sgd", SGD_MEMBERS, "mlp", 6, 2, 128),
    "adam_mlp": ("adam", ADAM_MEMBERS, "mlp", 3, 1, 128),
    "lars_mlp": ("lars", LARS_MEMBERS, "mlp", 3, 2, 128),
    "sgd_batchnorm_cnn": ("sgd", SGD_MEMBERS[1:], "cnn", 3, 1, 96),
}


def _case(name: str) -> tuple[list[TrainConfig], Task, int]:
    optimizer, members, model, epochs, pause, examples = CASES[name]
    task = digits_task(model, weight_decay="matrices_only", max_epochs=epochs, examples=examples)
    return _configs(optimizer, members, epochs), task, pause


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_group_restored_from_its_state_dict_goes_on_exactly_as_the_uninterrupted_one(case: str) -> None:
    configs, task, pause = _case(case)
    uninterrupted: dict[int, list[dict[str, Any]]] = {}
    _run(FusedGroup(configs, task=task, device=CPU), uninterrupted)

    first = FusedGroup(configs, task=task, device=CPU)
    resumed: dict[int, list[dict[str, Any]]] = {}
    _run(first, resumed, pause)
    state = _through_bytes(first.state_dict())  # plain tensors, lists and dicts
    second = FusedGroup(configs, task=task, device=CPU)
    second.load_state_dict(state)
    assert second.epoch == pause and not second.finished
    for k in range(len(configs)):
        for name, tensor in first.member_state_dict(k).items():
            assert torch.equal(second.member_state_dict(k)[name], tensor), (k, name)
    _run(second, resumed)
    assert second.finished and second.epoch == len(uninterrupted[0])
    assert resumed == uninterrupted
    # The members differ (the comparison can fail), and every scheduler's state mattered.
    assert uninterrupted[0] != uninterrupted[1]
    if case == "sgd_momentum_mlp":
        plateau_lrs = [m[v.LR] for m in uninterrupted[0]]
        assert plateau_lrs[-1] < plateau_lrs[0], plateau_lrs
        falling = uninterrupted[2]
        assert falling[pause]["val_acc"] < falling[pause - 1]["best_val_acc"], falling


def test_dropped_members_leave_the_stacks_and_the_others_go_on_bit_identical() -> None:
    configs, task, _ = _case("adam_mlp")
    full: dict[int, list[dict[str, Any]]] = {}
    _run(FusedGroup(configs, task=task, device=CPU), full)

    group = FusedGroup(configs, task=task, device=CPU)
    shrunk: dict[int, list[dict[str, Any]]] = {}
    _run(group, shrunk, 1)
    kept_weights = group.member_state_dict(2)
    group.drop([1, 3])
    assert group.active() == [0, 2] and group.num_stacked == 2
    assert [group.status(k) for k in range(4)] == [v.COMPLETED, v.STOPPED_EARLY, v.COMPLETED, v.STOPPED_EARLY]
    stack = group.state_dict()["stack"]
    assert stack["members"] == [0, 2]
    assert {t.shape[0] for t in stack["params"].values()} == {2}
    assert {t.shape[0] for s in stack["optimizer"]["state"] for t in s.values()} == {2}
    assert all(torch.equal(group.member_state_dict(2)[n], t) for n, t in kept_weights.items())
    _run(group, shrunk)
    for k in (0, 2):
        assert shrunk[k] == full[k], k
    for k in (1, 3):  # reported up to the epoch before they were dropped
        assert shrunk[k] == full[k][:1]
    # A checkpoint of the shrunk group restores the shrunk group.
    restored = FusedGroup(configs, task=task, device=CPU)
    restored.load_state_dict(_through_bytes(group.state_dict()))
    assert restored.active() == [0, 2] and restored.num_stacked == 2 and restored.finished


def test_drop_then_checkpoint_then_continue_equals_the_full_run() -> None:
    configs, task, _ = _case("sgd_momentum_mlp")
    full: dict[int, list[dict[str, Any]]] = {}
    _run(FusedGroup(configs, task=task, device=CPU), full, 4)

    group = FusedGroup(configs, task=task, device=CPU)
    partial: dict[int, list[dict[str, Any]]] = {}
    _run(group, partial, 2)
    group.drop([2])
    state = _through_bytes(group.state_dict())
    restored = FusedGroup(configs, task=task, device=CPU)
    restored.load_state_dict(state)
    assert restored.active() == [0, 1, 3] and restored.status(2) == v.STOPPED_EARLY
    _run(restored, partial, 2)
    for k in (0, 1, 3):
        assert partial[k] == full[k], k


def test_a_diverged_member_leaves_the_stack_and_dropping_it_or_everyone_is_harmless() -> None:
    task = digits_task("mlp", max_epochs=3, examples=128)
    members = [
        {"hparams": {"lr": 0.05, "momentum": 0.9}, "seed": 0},
        {"hparams": {"lr": 200.0, "momentum": 0.9}, "seed": 1},
        {"hparams": {"lr": 0.02, "momentum": 0.5}, "seed": 2},
    ]
    configs = _configs("sgd", members, 3)
    expected = {
        k: [_untimed(m) for m in member.reports] for k, member in enumerate(train_fused(configs, task, CPU))
    }
    assert len(expected[1]) == 1 and expected[1][0][v.DIVERGED_FLAG] is True

    group = FusedGroup(configs, task=task, device=CPU)
    seen: dict[int, list[dict[str, Any]]] = {}
    _run(group, seen, 1)
    assert group.status(1) == v.DIVERGED and group.active() == [0, 2] and group.num_stacked == 2
    group.drop([1])  # diverged: no change
    assert group.status(1) == v.DIVERGED and group.num_stacked == 2
    diverged_weights = group.member_state_dict(1)
    assert all(torch.isfinite(t).all() for t in diverged_weights.values())  # frozen before its bad step
    _run(group, seen, 1)
    group.drop([2, 2])
    group.drop([2])  # dropped already: no change
    assert group.active() == [0] and group.num_stacked == 1
    _run(group, seen)
    assert seen == {0: expected[0], 1: expected[1], 2: expected[2][:2]}
    assert [group.status(k) for k in range(3)] == [v.COMPLETED, v.DIVERGED, v.STOPPED_EARLY]

    # Everyone dropped: an empty, finished group that still checkpoints and restores.
    empty = FusedGroup(configs, task=task, device=CPU)
    empty.drop(range(3))
    assert empty.finished and empty.active() == [] and empty.num_stacked == 0
    assert empty.run_epoch() == {}
    restored = FusedGroup(configs, task=task, device=CPU)
    restored.load_state_dict(_through_bytes(empty.state_dict()))
    assert restored.finished and restored.num_stacked == 0
    weights = empty.member_state_dict(0)
    assert weights and all(torch.equal(restored.member_state_dict(0)[n], t) for n, t in weights.items())


def test_a_state_dict_is_a_snapshot_and_refuses_another_group() -> None:
    configs, task, _ = _case("adam_mlp")
    group = FusedGroup(configs, task=task, device=CPU)
    state = group.state_dict()
    before = {n: t.clone() for n, t in state["stack"]["params"].items()}
    _run(group, {}, 1)
    assert all(torch.equal(state["stack"]["params"][n], t) for n, t in before.items())
    other = FusedGroup(configs[:3], task=task, device=CPU)
    with pytest.raises(ValueError, match="seeds"):
        other.load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_checkpoint_restores_into_a_cuda_group() -> None:
    configs, task, pause = _case("sgd_batchnorm_cnn")
    uninterrupted: dict[int, list[dict[str, Any]]] = {}
    _run(FusedGroup(configs, task=task, device=CPU), uninterrupted)
    cpu = FusedGroup(configs, task=task, device=CPU)
    _run(cpu, {}, pause)
    cuda = FusedGroup(configs, task=task, device=torch.device("cuda"))
    cuda.load_state_dict(_through_bytes(cpu.state_dict()))
    assert all(t.is_cuda for t in cuda.member_state_dict(0).values())
    resumed: dict[int, list[dict[str, Any]]] = {}
    _run(cuda, resumed)
    for k in range(len(configs)):
        for got, want in zip(resumed[k], uninterrupted[k][pause:], strict=True):
            assert got.keys() == want.keys()
            for key, value in want.items():
                if isinstance(value, float):
                    assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (k, key)
                else:
                    assert got[key] == value, (k, key)
