"""Planning fused trials (sweeps.runner.fusion): who fuses and why not (one line), K from memory, packing."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from optsweep.errors import OptsweepError
from optsweep.sweeps import cli
from optsweep.sweeps.runner import fusion
from optsweep.sweeps.search import contenders
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import tasks
from optsweep.trainables.tasks import Task
from optsweep.vocabulary import CONFIGURATION_KEY

DIGITS = tasks.build_task("digits", {})


def decide(task: Task = DIGITS, optimizer_classes: dict[str, type] | None = None, **settings: Any) -> dict:
    args = StudySpec(name="plan", **settings)
    resolved = contenders.resolve(args.references(), {}, optimizer_classes)
    return fusion.decide(args, task, resolved)


def test_the_default_study_fuses_every_optimizer() -> None:
    decisions = decide()
    assert set(decisions) == {"sgd", "adam", "adamw"}
    assert all(d.fused and 1 <= d.group_size <= fusion.MAX_GROUP for d in decisions.values())
    assert {d.group_size for d in decide(fuse=3).values()} == {3}


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"fuse": 0}, "--no-fuse"),
        ({"search": "optuna"}, "--search optuna proposes each configuration from the results before it"),
        ({"workers_per_trial": 2}, "a fused group trains in one process; --workers-per-trial 2"),
    ],
)
def test_a_study_that_cannot_fuse_says_why_in_one_line(settings: dict[str, Any], reason: str) -> None:
    decisions = decide(**settings)
    assert all(not d.fused for d in decisions.values())
    for decision in decisions.values():
        assert decision.reason is not None and reason in decision.reason and "\n" not in decision.reason


class Sign(torch.optim.SGD):
    search_space: ClassVar[dict[str, Any]] = {"lr": {"log_uniform": [1e-4, 1e-1]}}


def test_a_users_optimizer_class_runs_unfused_beside_fused_builtins() -> None:
    decisions = decide(optimizers=("adam", f"{__name__}:Sign"), optimizer_classes={"sign": Sign})
    assert decisions["adam"].fused
    assert not decisions["sign"].fused and "user's optimizer class" in str(decisions["sign"].reason)


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer(x.flatten(1)))


def test_a_model_that_does_not_run_under_vmap_runs_unfused_with_the_models_reason() -> None:
    task = dataclasses.replace(DIGITS, model=DropoutNet)
    decisions = decide(task=task, optimizers=("adam",))
    assert not decisions["adam"].fused
    assert "model DropoutNet cannot be fused" in str(decisions["adam"].reason)


def test_group_size_follows_the_models_memory() -> None:
    batch = (torch.zeros(64, 64), torch.zeros(64, dtype=torch.long))
    small, large = nn.Linear(64, 10), nn.Sequential(nn.Linear(64, 4096), nn.Linear(4096, 10))
    assert fusion.member_bytes(large, batch) > 50 * fusion.member_bytes(small, batch)
    # Parameters: 5 copies; activations: outputs and their gradients.
    weights = (64 * 10 + 10) * 4
    assert fusion.member_bytes(small, batch) == 5 * weights + 2 * 64 * 10 * 4
    cpu = torch.device("cpu")
    assert fusion.group_size(small, batch, cpu) == fusion.MAX_GROUP
    assert fusion.group_size(small, batch, cpu, cpus_per_trial=1e-9) == 1  # memory shared by 1e9+ trials


def test_members_are_packed_in_configuration_order_into_enough_groups_for_the_slots() -> None:
    members = [{CONFIGURATION_KEY: c, "seed": s} for c in range(6) for s in range(2)]
    same = [0] * len(members)
    assert [len(g) for g in fusion.pack(members, same, 4, parallel=1)] == [4, 4, 4]
    two = fusion.pack(members, same, 128, parallel=2)
    assert [len(g) for g in two] == [6, 6]
    assert [(m[CONFIGURATION_KEY], m["seed"]) for m in two[0]] == [(c, s) for c in range(3) for s in range(2)]
    assert len(fusion.pack(members, same, 128, parallel=50)) == len(members)  # one member per group at most
    # Members whose optimizers take other code paths never share a group.
    signatures = [m[CONFIGURATION_KEY] % 2 for m in members]
    groups = fusion.pack(members, signatures, 128, parallel=1)
    assert len(groups) == 2
    assert all(len({m[CONFIGURATION_KEY] % 2 for m in g}) == 1 for g in groups)


def test_sgd_with_and_without_nesterov_is_planned_into_separate_groups() -> None:
    configurations = [
        {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 1e-4, "schedule": "constant"}
        for nesterov in (True, False, True)
    ]
    settings = StudySpec(name="plan").settings()
    groups = fusion.plan_groups("sgd", configurations, 2, settings, DIGITS, 128, parallel=1)
    assert sorted(len(g) for g in groups) == [2, 4]
    for group in groups:
        assert len({m["nesterov"] for m in group}) == 1


def test_fuse_flags(tmp_path: Any) -> None:
    def parse(*argv: str) -> StudySpec:
        return cli.parse([*argv, "--storage-path", str(tmp_path)], "p", "d", StudySpec(name="f"))

    assert parse().fuse is None
    assert parse("--fuse", "8").fuse == 8
    assert parse("--no-fuse").fuse == 0
    with pytest.raises(OptsweepError, match="either --fuse K or --no-fuse, not both"):
        parse("--fuse", "8", "--no-fuse")
    with pytest.raises(OptsweepError, match="--fuse -2 is invalid"):
        parse("--fuse", "-2")
