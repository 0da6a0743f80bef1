"""Fused trials of the built-in transformer task (pydoc_lm): each member equals its configuration
trained alone; a model that cannot be fused (dropout, data-dependent control flow) is refused with one
line naming it and why."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_fused import CPU, alone, worst_difference
from torch import Tensor, nn

from optsweep import vocabulary as v
from optsweep.trainables import text_corpus
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused import train_fused
from optsweep.trainables.fused_model import FusedModel, UnfusableModelError
from optsweep.trainables.language_model import DecoderLM
from optsweep.trainables.tasks import Task, build_task, token_cross_entropy

# About 500 training sequences of 16 bytes: 31 steps an epoch, a tenth of a second a run.
TINY_LM: dict[str, Any] = {
    "context_length": 16,
    "width": 16,
    "layers": 2,
    "heads": 2,
    "corpus_fraction": 0.02,
    "batch_size": 16,
}

# Members differ in learning rate, betas, seed and schedule (two share a seed: same initial weights
# and data order, different steps).
MEMBERS: list[dict[str, Any]] = [
    {"hparams": {"lr": 3e-3}, "seed": 0},
    {"hparams": {"lr": 1e-3, "beta1": 0.8, "weight_decay": 0.05}, "seed": 1, "schedule": "cosine"},
    {"hparams": {"lr": 2e-3, "beta2": 0.95}, "seed": 0, "schedule": "warmup_cosine"},
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Two cores shared by several processes: one intra-op thread is the faster for tiny models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _configs(**settings: Any) -> list[TrainConfig]:
    return [
        TrainConfig(task="pydoc_lm", task_args=TINY_LM, optimizer="adamw", max_epochs=2, **member, **settings)
        for member in MEMBERS
    ]


def _double_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def fp64_lm_task() -> Task:
    """The tiny pydoc_lm task with its model and training loss in float64 (the built-in loss computes
    in float32; the evaluation metrics are float32 either way, fused or not)."""
    task = build_task("pydoc_lm", TINY_LM)
    args = {k: TINY_LM[k] for k in ("context_length", "width", "layers", "heads")}

    def model() -> nn.Module:
        return DecoderLM(text_corpus.VOCAB_SIZE, **args).double()

    return dataclasses.replace(task, name="pydoc_lm-fp64", model=model, loss=_double_cross_entropy)


def test_transformer_members_equal_their_runs_alone_fp64() -> None:
    task = fp64_lm_task()
    configs = _configs()
    fused = train_fused(configs, task=task, device=CPU)
    # The members differ from one another by far more than the tolerance (the comparison can fail).
    assert worst_difference(fused[0].reports, fused[1].reports) > 1e-2
    assert worst_difference(fused[0].reports, fused[2].reports) > 1e-3
    for member, config in zip(fused, configs, strict=True):
        assert member.status == v.COMPLETED
        difference = worst_difference(member.reports, alone(config, task))
        print(f"pydoc_lm fp64 seed {config.seed}: worst relative difference {difference:.2e}")
        assert difference < 1e-9, (config.hparams, difference)


def test_builtin_transformer_task_members_are_close_to_their_runs_alone_fp32() -> None:
    # The task as shipped (float32 model, float32 loss), built from the configurations. Measured: a
    # worst relative difference of about 4e-8 over two epochs; the bound leaves room for other BLAS.
    configs = _configs(grad_clip=1.0)
    fused = train_fused(configs, device=CPU)
    assert worst_difference(fused[0].reports, fused[1].reports) > 1e-2
    for member, config in zip(fused, configs, strict=True):
        assert member.status == v.COMPLETED
        difference = worst_difference(member.reports, alone(config, None))
        print(f"pydoc_lm fp32 seed {config.seed}: worst relative difference {difference:.2e}")
        assert difference < 1e-5, (config.hparams, difference)


def test_tied_output_layer_stays_tied_in_each_member_and_its_state_dict_loads_unfused() -> None:
    torch.manual_seed(0)
    models = [DecoderLM(256, 16, 16, 2, 2).double() for _ in range(2)]
    fused = FusedModel(models)
    tokens = torch.randint(0, 256, (2, 4, 16))
    fused.train()
    fused.losses(tokens, tokens, _double_cross_entropy).sum().backward()
    grad = fused.params["token_embedding.weight"].grad
    assert grad is not None and "head.weight" not in fused.params
    for k, model in enumerate(models):
        _double_cross_entropy(model(tokens[k]), tokens[k]).backward()
        # The gradient of the tied weight: its use as the embedding plus its use as the output layer.
        torch.testing.assert_close(grad[k], model.token_embedding.weight.grad, rtol=1e-12, atol=1e-14)
        state = fused.member_state_dict(k)
        assert list(state) == list(model.state_dict())  # "head.weight" too, as a checkpoint has it
        restored = DecoderLM(256, 16, 16, 2, 2).double()
        restored.load_state_dict(state)  # strict
        assert restored.head.weight is restored.token_embedding.weight
        fused.eval()
        with torch.no_grad():
            torch.testing.assert_close(fused.outputs(tokens[0])[k], restored.eval()(tokens[0]))


def test_default_pydoc_lm_model_fuses() -> None:
    # The shipped defaults (dropout 0) fuse; random tokens stand in for the corpus.
    task = build_task("pydoc_lm", {})
    tokens = torch.randint(0, 256, (2, 64))
    FusedModel.check(task.model(), tokens, tokens, token_cross_entropy)


def _one_line(error: pytest.ExceptionInfo[UnfusableModelError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_transformer_with_dropout_is_refused_with_one_line() -> None:
    # A fused member cannot draw its run alone's dropout masks: refused rather than trained with
    # other masks than its run alone would have (its metrics would then not equal that run's).
    configs = [
        TrainConfig(
            task="pydoc_lm",
            task_args={**TINY_LM, "dropout": 0.1},
            optimizer="adamw",
            max_epochs=1,
            seed=seed,
        )
        for seed in (0, 1)
    ]
    with pytest.raises(UnfusableModelError) as error:
        train_fused(configs, device=CPU)
    message = _one_line(error)
    assert message.startswith("model DecoderLM cannot be fused: ")
    assert "random numbers" in message and "dropout" in message, message
    # In evaluation mode dropout draws nothing, but training does: refused by the check itself too.
    tokens = torch.randint(0, 256, (2, 16))
    with pytest.raises(UnfusableModelError, match="dropout"):
        FusedModel.check(DecoderLM(256, 16, 16, 1, 2, dropout=0.1), tokens, tokens, token_cross_entropy)


class BranchOnValue(nn.Module):
    """A forward that branches on a tensor's value: not batchable by torch.vmap."""

    def __init__(self, use_item: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.use_item = use_item

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)
        positive = y.sum().item() > 0 if self.use_item else y.sum() > 0
        return y if positive else -y


@pytest.mark.parametrize("use_item", [False, True])
def test_data_dependent_control_flow_is_refused_with_one_line_naming_the_model(use_item: bool) -> None:
    with pytest.raises(UnfusableModelError) as error:
        FusedModel.check(BranchOnValue(use_item), torch.randn(3, 4), torch.tensor([0, 1, 2]), F.cross_entropy)
    message = _one_line(error)
    assert message.startswith("model BranchOnValue cannot be fused: "), message
    assert "data-dependent control flow" in message, message
