"""Fused trials' parts: a frozen member stays frozen without disturbing the others, per-member norms
(LAMB, LARS) are each member's own, and what cannot be fused is refused in one line."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from optsweep import optimizers
from optsweep.optimizers.members import FusedOptimizer, FusionError, placeholder_groups
from optsweep.optimizers.transforms import tensor_norm
from optsweep.trainables import models
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused import train_fused
from optsweep.trainables.fused_model import FusedModel, UnfusableModelError
from optsweep.trainables.tasks import Task, TaskData

CPU = torch.device("cpu")


def _cnns(seeds: list[int]) -> list[nn.Module]:
    built = []
    for seed in seeds:
        torch.manual_seed(seed)
        built.append(models.build_model("cnn", (1, 8, 8), 10).double())
    return built


def _fused_adam(model: FusedModel, lrs: list[float]) -> FusedOptimizer:
    groups = [{"params": list(model.params.values())}]
    return FusedOptimizer(groups, [optimizers.Adam(placeholder_groups(groups), lr=lr) for lr in lrs])


def _snapshot(model: FusedModel, optimizer: FusedOptimizer, member: int) -> list[torch.Tensor]:
    tensors = [t[member].clone() for t in model.params.values()]
    tensors += [t[member].clone() for t in model.buffers.values()]
    for param in model.params.values():
        tensors += [s[member].clone() for s in optimizer.state_of(param).values()]
    return tensors


def _step(model: FusedModel, optimizer: FusedOptimizer, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    model.train()
    losses = model.losses(inputs, targets, F.cross_entropy)
    optimizer.zero_grad()
    losses.sum().backward()
    optimizer.step()
    model.restore_frozen()


def test_a_frozen_member_keeps_weights_statistics_and_state_and_the_others_are_undisturbed() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(16, 1, 8, 8, generator=generator, dtype=torch.float64), torch.randint(0, 10, (16,)))
        for _ in range(4)
    ]
    pair = FusedModel(_cnns([0, 1]))
    pair_optimizer = _fused_adam(pair, [1e-2, 1e-2])
    solo = FusedModel(_cnns([0]))
    solo_optimizer = _fused_adam(solo, [1e-2])
    x, y = batches[0]
    _step(pair, pair_optimizer, torch.stack([x, x]), torch.stack([y, y]))
    _step(solo, solo_optimizer, x[None], y[None])
    pair.freeze(1)
    pair_optimizer.freeze(1)
    frozen = _snapshot(pair, pair_optimizer, 1)
    for x, y in batches[1:]:
        poisoned = torch.full_like(x, math.nan)  # the frozen member's loss and gradients are NaN
        _step(pair, pair_optimizer, torch.stack([x, poisoned]), torch.stack([y, y]))
        _step(solo, solo_optimizer, x[None], y[None])
    for before, after in zip(frozen, _snapshot(pair, pair_optimizer, 1), strict=True):
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    for kept, alone in zip(
        _snapshot(pair, pair_optimizer, 0), _snapshot(solo, solo_optimizer, 0), strict=True
    ):
        torch.testing.assert_close(kept, alone, rtol=1e-12, atol=1e-14)
    # Member 0 did train, and its BatchNorm statistics are its own.
    assert not torch.equal(pair.params["0.weight"][0], frozen[0])
    assert not torch.equal(pair.buffers["1.running_mean"][0], pair.buffers["1.running_mean"][1])


def _tiny_task(model: type[nn.Module] | None = None) -> Task:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    y = torch.randint(0, 3, (32,), generator=generator)
    split = TensorDataset(x, y)
    build = model or (lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    return Task(name="tiny", model=build, data=lambda: TaskData(split, split), batch_size=16, max_epochs=1)


class _Dropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.linear(x), 0.5, self.training)


def _one_line(error: pytest.ExceptionInfo[BaseException], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


def test_a_model_with_dropout_is_refused_in_one_line() -> None:
    with pytest.raises(UnfusableModelError) as error:
        train_fused([TrainConfig(seed=0), TrainConfig(seed=1)], task=_tiny_task(_Dropout), device=CPU)
    _one_line(error, "_Dropout", "cannot be fused", "vmap")


def test_an_optimizer_without_per_member_hyperparameters_is_refused_in_one_line() -> None:
    model = FusedModel(_cnns([0, 1]))
    groups = [{"params": list(model.params.values())}]
    with pytest.raises(FusionError) as error:
        FusedOptimizer(groups, [torch.optim.SGD(placeholder_groups(groups), lr=0.1) for _ in range(2)])
    _one_line(error, "SGD", "runs unfused")


@pytest.mark.parametrize("shape", [(3, 4, 5), (3, 7), (3,)])
def test_per_member_norms_are_each_members_own_norm(shape: tuple[int, ...]) -> None:
    # LAMB's and LARS's trust ratios, fused: one norm per member, broadcastable over its tensor.
    stacked = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    norms = tensor_norm(stacked, batch_dims=1)
    assert norms.shape == (shape[0],) + (1,) * (len(shape) - 1)
    for k in range(shape[0]):
        torch.testing.assert_close(norms[k].reshape(()), stacked[k].norm(), rtol=1e-14, atol=0)
    assert torch.equal(tensor_norm(stacked), stacked.norm())


@pytest.mark.parametrize(
    ("second", "words"),
    [
        (TrainConfig(optimizer="sgd", hparams={"lr": 0.1, "momentum": 0.9}, seed=1), ("switches",)),
        (TrainConfig(optimizer="adam", seed=1), ("share optimizer",)),
        (
            TrainConfig(
                optimizer="sgd", hparams={"lr": 0.1, "momentum": 0.9, "nesterov": True}, max_epochs=2
            ),
            ("share max_epochs",),
        ),
        (
            TrainConfig(optimizer="sgd", hparams={"lr": 0.1, "momentum": 0.9, "nesterov": True}, amp=True),
            ("amp",),
        ),
    ],
)
def test_members_that_cannot_share_a_group_are_refused_in_one_line(
    second: TrainConfig, words: tuple[str, ...]
) -> None:
    first = TrainConfig(optimizer="sgd", hparams={"lr": 0.1, "momentum": 0.9, "nesterov": True}, seed=0)
    with pytest.raises(ValueError) as error:
        train_fused([first, second], task=_tiny_task(), device=CPU)
    _one_line(error, *words)
