"""Adagrad (Duchi, Hazan & Singer, 2011)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from . import _validation as check
from ._engine import FusableOptimizer, hyper, step_counter
from .transforms import Scalar, accumulate_square_, add_l2_penalty, descend_ratio_, oriented_grad


class AdagradScalars(NamedTuple):
    """One step's scalars (Python floats eagerly, tensors when compiled)."""

    step_size: Scalar  # lr / (1 + (t - 1) * lr_decay)
    weight_decay: Scalar
    eps: Scalar


def adagrad_update(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    scalars: AdagradScalars | Tensor,
    *,
    maximize: bool,
    has_weight_decay: bool,
) -> None:
    s = scalars if type(scalars) is AdagradScalars else AdagradScalars._make(scalars)  # compiled: a tensor
    for i, param in enumerate(params):
        grad = oriented_grad(grads[i], maximize)
        if has_weight_decay:
            grad = add_l2_penalty(grad, param, s.weight_decay)
        total = accumulate_square_(sums[i], grad)
        descend_ratio_(param, grad, total.sqrt().add_(s.eps), s.step_size)


class Adagrad(FusableOptimizer):
    """Adagrad, a drop-in for `torch.optim.Adagrad`: same arguments, defaults, state and trajectory."""

    # The nuisance hyperparameters a study tunes, and where (sweeps.search.spaces reads this; plain data).
    search_space: ClassVar[dict[str, Any]] = {
        "lr": {"log_uniform": [1e-3, 1.0]},
        "weight_decay": {"log_uniform_or_zero": [1e-6, 1e-2]},
    }

    _update = staticmethod(adagrad_update)
    _state_names = ("sum",)
    _group_defaults: ClassVar[dict[str, Any]] = {  # as torch.optim.Adagrad.__setstate__
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "fused": None,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: Scalar = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check.check_lr(lr)
        check.check_nonnegative("lr_decay", lr_decay)
        check.check_nonnegative("weight_decay", weight_decay)
        check.check_nonnegative("initial_accumulator_value", initial_accumulator_value)
        check.check_nonnegative("eps", eps, label="epsilon")
        check.check_implementation_flags("Adagrad", foreach, fused, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        # Like torch.optim.Adagrad, the state exists from construction on (state_dicts match torch's).
        for group in self.param_groups:
            for param in group["params"]:
                self._init_state(param, group)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        value = group["initial_accumulator_value"]
        largest = (
            torch.finfo(param.real.dtype).max if param.is_floating_point() or param.is_complex() else None
        )
        if largest is not None and value > largest:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {value}; it must fit the parameters' dtype "
                f"{param.dtype} (at most {largest:g})"
            )
        state = self.state[param]
        state["step"] = step_counter()
        state["sum"] = torch.full_like(
            param, complex(value, value) if param.is_complex() else value, memory_format=torch.preserve_format
        )

    def _scalars(self, group: dict[str, Any], step: Scalar) -> AdagradScalars:
        lr = hyper(group["lr"])
        return AdagradScalars(
            lr / (1 + (step - 1) * float(group["lr_decay"])),
            float(group["weight_decay"]),
            float(group["eps"]),
        )

    def _flags(self, group: dict[str, Any]) -> dict[str, bool]:
        return {"maximize": bool(group["maximize"]), "has_weight_decay": float(group["weight_decay"]) != 0}
