"""Fused trials (trainables.fused): each member equals the same configuration trained alone."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from optsweep import vocabulary as v
from optsweep.trainables import data, loop, models, sessions
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused import train_fused
from optsweep.trainables.tasks import Task, TaskData

CPU = torch.device("cpu")
TIMING_KEYS = (v.EPOCH_TIME_S, v.SAMPLES_PER_S)


def digits_task(
    model: str,
    weight_decay: str = "all",
    max_epochs: int = 2,
    dtype: torch.dtype = torch.float64,
    examples: int | None = None,
) -> Task:
    """Digits classification with the built-in `model`, weights and data in `dtype`; `examples`: only
    the first that many examples of each split (the CNN is slow on a shared CPU)."""

    def splits() -> TaskData:
        loaded = data.load_splits("digits")

        def convert(split: Any) -> TensorDataset:
            x, y = split.tensors
            return TensorDataset(x[:examples].to(dtype), y[:examples])

        return TaskData(convert(loaded.train), convert(loaded.val), convert(loaded.test))

    def build() -> torch.nn.Module:
        return models.build_model(model, (1, 8, 8), 10).to(dtype)

    return Task(
        name=f"digits-{model}-{dtype}",
        model=build,
        data=splits,
        batch_size=64,
        max_epochs=max_epochs,
        weight_decay=weight_decay,
        divergence_loss=100 * math.log(10),
    )


def alone(config: TrainConfig, task: Task | None) -> list[dict[str, Any]]:
    """The per-epoch reports of `config` trained alone by the one training loop, on the CPU."""
    session = sessions.LocalSession(device=CPU)
    loop.train(config, session, task=task)
    return session.reports


def worst_difference(fused: list[dict[str, Any]], plain: list[dict[str, Any]]) -> float:
    """The largest relative difference between two runs' per-epoch reports (timings aside); the keys,
    epochs and flags must be equal."""
    assert len(fused) == len(plain), (len(fused), len(plain))
    worst = 0.0
    for a, b in zip(fused, plain, strict=True):
        assert set(a) == set(b), set(a) ^ set(b)
        for key in a:
            if key in TIMING_KEYS:
                continue
            if isinstance(a[key], (bool, str)) or key == v.EPOCH:
                assert a[key] == b[key], (key, a[key], b[key])
                continue
            scale = max(abs(b[key]), 1e-12)
            worst = max(worst, abs(a[key] - b[key]) / scale)
    return worst


# Members differ in every swept hyperparameter, seed and schedule; code-path switches are shared.
CASES: dict[str, list[dict[str, Any]]] = {
    "sgd_momentum": [
        {"optimizer": "sgd", "hparams": {"lr": 0.05, "momentum": 0.9}, "seed": 0},
        {
            "optimizer": "sgd",
            "hparams": {"lr": 0.02, "momentum": 0.5, "dampening": 0.1},
            "seed": 1,
            "schedule": "cosine",
        },
        {"optimizer": "sgd", "hparams": {"lr": 0.1, "momentum": 0.8}, "seed": 2, "schedule": "step"},
    ],
    "sgd_nesterov_decay": [
        {
            "optimizer": "sgd",
            "hparams": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
            "seed": 3,
        },
        {
            "optimizer": "sgd",
            "hparams": {"lr": 0.01, "momentum": 0.7, "nesterov": True, "weight_decay": 5e-2},
            "seed": 4,
            "schedule": "warmup_cosine",
        },
    ],
    "adam": [
        {"optimizer": "adam", "hparams": {"lr": 1e-3}, "seed": 0},
        {
            "optimizer": "adam",
            "hparams": {"lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
            "seed": 5,
            "schedule": "cosine",
        },
        {"optimizer": "adam", "hparams": {"lr": 5e-4, "beta1": 0.95}, "seed": 0, "schedule": "exponential"},
    ],
    "adamw_amsgrad": [
        {"optimizer": "adamw", "hparams": {"lr": 2e-3, "weight_decay": 0.1, "amsgrad": True}, "seed": 6},
        {
            "optimizer": "adamw",
            "hparams": {"lr": 1e-3, "weight_decay": 0.01, "amsgrad": True, "beta2": 0.95},
            "seed": 7,
            "schedule": "onecycle",
        },
    ],
    "adagrad": [
        {"optimizer": "adagrad", "hparams": {"lr": 0.05}, "seed": 8},
        {
            "optimizer": "adagrad",
            "hparams": {"lr": 0.02, "lr_decay": 1e-3, "initial_accumulator_value": 0.1},
            "seed": 9,
            "schedule": "plateau",
        },
    ],
    "rmsprop_centered_momentum": [
        {"optimizer": "rmsprop", "hparams": {"lr": 1e-3, "centered": True, "momentum": 0.5}, "seed": 10},
        {
            "optimizer": "rmsprop",
            "hparams": {"lr": 3e-4, "centered": True, "momentum": 0.9, "alpha": 0.9, "weight_decay": 0.0},
            "seed": 11,
            "schedule": "step",
        },
    ],
    # Per-tensor trust ratios: each member's norms over its own tensors only.
    "lamb": [
        {"optimizer": "lamb", "hparams": {"lr": 1e-2, "weight_decay": 1e-2}, "seed": 12},
        {
            "optimizer": "lamb",
            "hparams": {"lr": 5e-3, "beta1": 0.8, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.1},
            "seed": 13,
            "schedule": "cosine",
        },
    ],
    "lars_nesterov": [
        {"optimizer": "lars", "hparams": {"lr": 5.0, "momentum": 0.9, "nesterov": True}, "seed": 14},
        {
            "optimizer": "lars",
            "hparams": {
                "lr": 2.0,
                "momentum": 0.8,
                "nesterov": True,
                "weight_decay": 1e-3,
                "trust_coefficient": 2e-3,
                "eps": 1e-6,
            },
            "seed": 15,
            "schedule": "warmup_cosine",
        },
    ],
}


def _configs(members: list[dict[str, Any]], **settings: Any) -> list[TrainConfig]:
    return [TrainConfig(**{"max_epochs": 2, **member, **settings}) for member in members]


@pytest.mark.parametrize("case", [*sorted(CASES), "adam_grad_clip"])
def test_each_member_equals_its_configuration_trained_alone_fp64(case: str) -> None:
    task = digits_task("mlp", weight_decay="matrices_only")
    # Clipping per member (a norm small enough that it clips most steps).
    configs = _configs(CASES["adam"], grad_clip=0.5) if case == "adam_grad_clip" else _configs(CASES[case])
    fused = train_fused(configs, task=task, device=CPU)
    # The members differ from one another by far more than the tolerance (the comparison can fail).
    assert worst_difference(fused[0].reports, fused[1].reports) > 1e-3
    for member, config in zip(fused, configs, strict=True):
        assert member.status == v.COMPLETED
        difference = worst_difference(member.reports, alone(config, task))
        print(f"{case} seed {config.seed}: worst relative difference {difference:.2e}")
        assert difference < 1e-9, (case, config.hparams, difference)


def test_batchnorm_cnn_members_keep_their_own_running_statistics_fp64() -> None:
    # Validation and test metrics are computed with each member's running statistics.
    task = digits_task("cnn", examples=160)
    configs = _configs(
        [
            {"optimizer": "sgd", "hparams": {"lr": 0.05, "momentum": 0.9}, "seed": 0},
            {"optimizer": "sgd", "hparams": {"lr": 0.01, "momentum": 0.5}, "seed": 1, "schedule": "cosine"},
        ]
    )
    fused = train_fused(configs, task=task, device=CPU)
    assert worst_difference(fused[0].reports, fused[1].reports) > 1e-3
    for member, config in zip(fused, configs, strict=True):
        difference = worst_difference(member.reports, alone(config, task))
        print(f"cnn seed {config.seed}: worst relative difference {difference:.2e}")
        assert difference < 1e-9, (config.hparams, difference)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fp32_members_are_close_to_their_runs_alone(model: str) -> None:
    # The MLP through the built-in digits task (built from the configs), the CNN on a subset.
    task = None if model == "mlp" else digits_task("cnn", dtype=torch.float32, examples=160)
    configs = _configs(
        [
            {"optimizer": "adam", "hparams": {"lr": 2e-3}, "seed": 0},
            {"optimizer": "adam", "hparams": {"lr": 1e-3, "beta1": 0.8}, "seed": 1, "schedule": "cosine"},
        ],
        task_args={"model": model},
    )
    fused = train_fused(configs, task=task, device=CPU)
    for member, config in zip(fused, configs, strict=True):
        difference = worst_difference(member.reports, alone(config, task))
        print(f"fp32 {model} seed {config.seed}: worst relative difference {difference:.2e}")
        assert difference < 1e-4, (config.hparams, difference)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_a_diverging_member_is_frozen_and_reported_diverged_while_the_others_go_on(model: str) -> None:
    task = digits_task(model, max_epochs=3, examples=None if model == "mlp" else 160)
    configs = _configs(
        [
            {"optimizer": "sgd", "hparams": {"lr": 0.05, "momentum": 0.9}, "seed": 0},
            {"optimizer": "sgd", "hparams": {"lr": 200.0, "momentum": 0.9}, "seed": 1},
            {"optimizer": "sgd", "hparams": {"lr": 0.02, "momentum": 0.5}, "seed": 2},
        ],
        max_epochs=3,
    )
    seen: list[tuple[int, int]] = []
    fused = train_fused(configs, task=task, device=CPU, report=lambda k, m: seen.append((k, m[v.EPOCH])))
    assert [m.status for m in fused] == [v.COMPLETED, v.DIVERGED, v.COMPLETED]
    diverged_alone = alone(configs[1], task)
    assert diverged_alone[-1][v.DIVERGED_FLAG] is True
    assert worst_difference(fused[1].reports, diverged_alone) == 0.0
    assert len(fused[0].reports) == 3 and (0, 3) in seen and (1, 2) not in seen
    for k in (0, 2):
        assert worst_difference(fused[k].reports, alone(configs[k], task)) < 1e-9
