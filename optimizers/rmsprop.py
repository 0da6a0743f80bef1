"""RMSprop (Hinton's lecture 6e; centered variant by Graves, 2013)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from torch import Tensor
from torch.optim.optimizer import ParamsT

from . import _validation as check
from ._engine import FusableOptimizer, hyper, step_counter, zeros_like
from .transforms import (
    Scalar,
    add_l2_penalty,
    descend_,
    descend_ratio_,
    ema_,
    ema_of_square_,
    heavy_ball_,
    oriented_grad,
    rms_denominator,
)


class RmspropScalars(NamedTuple):
    """One step's scalars (Python floats eagerly, tensors when compiled)."""

    lr: Scalar
    weight_decay: Scalar
    alpha: Scalar
    one_minus_alpha: Scalar
    eps: Scalar
    momentum: Scalar


def rmsprop_update(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor] | None,
    momentum_buffers: list[Tensor] | None,
    scalars: RmspropScalars | Tensor,
    *,
    maximize: bool,
    has_weight_decay: bool,
    centered: bool,
    has_momentum: bool,
) -> None:
    s = scalars if type(scalars) is RmspropScalars else RmspropScalars._make(scalars)  # compiled: a tensor
    for i, param in enumerate(params):
        grad = oriented_grad(grads[i], maximize)
        if has_weight_decay:
            grad = add_l2_penalty(grad, param, s.weight_decay)
        square_avg = ema_of_square_(square_avgs[i], grad, s.alpha, s.one_minus_alpha)
        grad_avg = ema_(grad_avgs[i], grad, s.alpha, s.one_minus_alpha) if centered else None
        denominator = rms_denominator(square_avg, grad_avg, s.eps)
        if has_momentum:
            buffer = heavy_ball_(momentum_buffers[i], grad / denominator, s.momentum, 1.0)
            descend_(param, buffer, s.lr)
        else:
            descend_ratio_(param, grad, denominator, s.lr)


class RMSprop(FusableOptimizer):
    """RMSprop, a drop-in for `torch.optim.RMSprop`: same arguments, defaults, state and trajectory.

    `fused` (not in torch's RMSprop) chooses the step like in the other optimizers."""

    # The nuisance hyperparameters a study tunes, and where (sweeps.search.spaces reads this; plain data).
    search_space: ClassVar[dict[str, Any]] = {
        "lr": {"log_uniform": [1e-5, 1e-1]},
        "alpha": {"one_minus_log_uniform": [0.9, 0.999]},
        "momentum": {"uniform": [0.0, 0.9]},
        "centered": {"choice": [False, True]},
        "weight_decay": {"log_uniform_or_zero": [1e-6, 1e-2]},
    }

    _update = staticmethod(rmsprop_update)
    _state_names = ("square_avg", "grad_avg", "momentum_buffer")
    _group_defaults: ClassVar[dict[str, Any]] = {  # as torch.optim.RMSprop.__setstate__, plus our `fused`
        "momentum": 0,
        "centered": False,
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
        "fused": None,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: Scalar = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        check.check_lr(lr)
        check.check_nonnegative("eps", eps, label="epsilon")
        check.check_nonnegative("momentum", momentum)
        check.check_nonnegative("weight_decay", weight_decay)
        check.check_in_unit_interval("alpha", alpha, closed_right=True)
        check.check_implementation_flags(
            "RMSprop", foreach, fused, capturable=capturable, differentiable=differentiable
        )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        state["step"] = step_counter()
        state["square_avg"] = zeros_like(param)
        if float(group["momentum"]) > 0:
            state["momentum_buffer"] = zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = zeros_like(param)

    def _active_state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return tuple(
            name
            for name in self._state_names
            if name == "square_avg"
            or (name == "grad_avg" and group["centered"])
            or (name == "momentum_buffer" and float(group["momentum"]) > 0)
        )

    def _scalars(self, group: dict[str, Any], step: Scalar) -> RmspropScalars:
        alpha = float(group["alpha"])
        return RmspropScalars(
            hyper(group["lr"]),
            float(group["weight_decay"]),
            alpha,
            1 - alpha,
            float(group["eps"]),
            float(group["momentum"]),
        )

    def _flags(self, group: dict[str, Any]) -> dict[str, bool]:
        return {
            "maximize": bool(group["maximize"]),
            "has_weight_decay": float(group["weight_decay"]) != 0,
            "centered": bool(group["centered"]),
            "has_momentum": float(group["momentum"]) > 0,
        }
