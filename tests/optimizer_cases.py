"""Shared inputs for the optimizer tests: torch's own optimizer test cases plus ours, and a tiny
problem whose trajectories are compared step by step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.testing._internal.common_optimizers import optim_db

from optsweep import optimizers

TORCH_REFERENCES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}

# Cases torch's own inputs don't cover.
EXTRA_CASES: dict[str, list[dict[str, Any]]] = {
    "sgd": [
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01, "maximize": True},
        {"lr": torch.tensor(0.02), "momentum": 0.5, "nesterov": True},
        {"lr": 0.0, "momentum": 0.9},
    ],
    "adam": [
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True},
        {"lr": torch.tensor(0.005), "betas": (0.5, 0.9), "eps": 1e-3},
        {"lr": 0.01, "betas": (0.0, 0.0)},
    ],
    "adamw": [
        {"lr": 0.02, "weight_decay": 0.5, "maximize": True, "amsgrad": True},
        {"lr": 0.01, "betas": (torch.tensor(0.8), torch.tensor(0.95))},
    ],
    "adagrad": [{"lr": 0.05, "eps": 1e-3, "initial_accumulator_value": 0.5, "maximize": True}],
    "rmsprop": [
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-4, "momentum": 0.5, "centered": False, "weight_decay": 0.01},
        {"lr": torch.tensor(0.003), "centered": True},
    ],
}


def torch_cases(name: str) -> list[dict[str, Any]]:
    """The kwargs of torch's own optimizer test inputs (common_optimizers) for the CPU."""
    cls = TORCH_REFERENCES[name]
    info = next(i for i in optim_db if i.optim_cls is cls)
    return [dict(case.kwargs) for case in info.optim_inputs_func(device="cpu", dtype=torch.float32)]


def all_cases(name: str) -> list[dict[str, Any]]:
    return torch_cases(name) + EXTRA_CASES[name]


def case_id(kwargs: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return f"T{v.item():g}"
        if isinstance(v, tuple):
            return "(" + ",".join(short(x) for x in v) + ")"
        return f"{v:g}" if isinstance(v, float) else str(v)

    return "-".join(f"{k}={short(v)}" for k, v in kwargs.items()) or "default"


@dataclass
class Problem:
    """A few parameters of different shapes and kinds in two param groups, one never gets a grad."""

    params: list[torch.Tensor]
    frozen: torch.Tensor
    groups: list[dict[str, Any]]

    def loss(self) -> torch.Tensor:
        total = torch.zeros((), dtype=self.params[0].real.dtype)
        for i, p in enumerate(self.params):
            real = torch.view_as_real(p) if p.is_complex() else p
            total = total + 0.5 * (real**2).sum() + torch.sin(3 * real + i).sum()
        return total


def make_problem(
    dtype: torch.dtype,
    *,
    complex_param: bool,
    second_group: dict[str, Any] | None = None,
    seed: int = 0,
) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (2, 3, 3, 3)]
    # Drawn in float64 and cast, so float32 and float64 problems start from the same point.
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]
    if complex_param:
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        params.append(torch.randn(4, 3, generator=gen, dtype=torch.complex128).to(cdtype).requires_grad_())
    frozen = torch.randn(6, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    groups: list[dict[str, Any]] = [{"params": [*params[:2], frozen]}, {"params": params[2:]}]
    if second_group:
        groups[1].update(second_group)
    return Problem(params=params, frozen=frozen, groups=groups)


def clone_problem(problem: Problem) -> Problem:
    mapping = {id(p): p.detach().clone().requires_grad_() for p in [*problem.params, problem.frozen]}
    groups = []
    for group in problem.groups:
        g = dict(group)
        g["params"] = [mapping[id(p)] for p in group["params"]]
        groups.append(g)
    return Problem(
        params=[mapping[id(p)] for p in problem.params], frozen=mapping[id(problem.frozen)], groups=groups
    )


def run_steps(
    opt: torch.optim.Optimizer,
    problem: Problem,
    steps: int,
    *,
    after_step: Callable[[int], None] | None = None,
) -> list[list[torch.Tensor]]:
    """Run `steps` steps; the trajectory of every parameter after each step."""
    trajectory = []
    for i in range(steps):
        opt.zero_grad()
        problem.loss().backward()
        opt.step()
        if after_step:
            after_step(i)
        trajectory.append([p.detach().clone() for p in problem.params])
    return trajectory


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    """The issue's bar: 1e-9 relative in float64, 3e-5 in float32 (atol guards values near zero)."""
    return {"rtol": 1e-9, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 3e-5, "atol": 3e-6}


def ours(name: str) -> type[torch.optim.Optimizer]:
    return optimizers.optimizer_class(name)
