"""Stochastic gradient descent with momentum (Polyak's heavy ball, or Nesterov's)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from torch import Tensor
from torch.optim.optimizer import ParamsT

from . import _validation as check
from ._engine import FusableOptimizer, hyper, zeros_like
from .transforms import Scalar, add_l2_penalty, descend_, heavy_ball_, nesterov_direction, oriented_grad


def momentum_scalars(group: dict[str, Any], first_step: bool) -> tuple[float, float]:
    """(buffer decay, direction scale) for `heavy_ball_`: a buffer's first step copies the direction."""
    if first_step:
        return 0.0, 1.0
    return float(group["momentum"]), 1 - float(group["dampening"])


class SgdScalars(NamedTuple):
    """One step's scalars (Python floats eagerly, tensors when compiled)."""

    lr: Scalar
    weight_decay: Scalar
    momentum: Scalar
    buffer_decay: Scalar  # see momentum_scalars
    direction_scale: Scalar


def sgd_update(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    scalars: SgdScalars | Tensor,
    *,
    maximize: bool,
    has_weight_decay: bool,
    has_momentum: bool,
    nesterov: bool,
) -> None:
    s = scalars if type(scalars) is SgdScalars else SgdScalars._make(scalars)  # compiled: a tensor
    for i, param in enumerate(params):
        direction = oriented_grad(grads[i], maximize)
        if has_weight_decay:
            direction = add_l2_penalty(direction, param, s.weight_decay)
        if has_momentum:
            buffer = heavy_ball_(momentum_buffers[i], direction, s.buffer_decay, s.direction_scale)
            direction = nesterov_direction(direction, buffer, s.momentum) if nesterov else buffer
        descend_(param, direction, s.lr)


class MomentumBufferOptimizer(FusableOptimizer):
    """State of SGD-like optimizers: a momentum buffer per parameter while momentum != 0, no step count
    (torch's layout); a buffer's first step is marked by step 0.0 (see `momentum_scalars`)."""

    _state_names = ("momentum_buffer",)
    _counts_steps = False

    def _is_fresh(self, state: dict[str, Any], group: dict[str, Any]) -> bool:
        return float(group["momentum"]) != 0 and "momentum_buffer" not in state

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        self.state[param]["momentum_buffer"] = zeros_like(param)

    def _active_state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self._state_names if float(group["momentum"]) != 0 else ()


class SGD(MomentumBufferOptimizer):
    """SGD, a drop-in for `torch.optim.SGD`: same arguments, defaults, state and trajectory."""

    # The nuisance hyperparameters a study tunes, and where (sweeps.search.spaces reads this; plain data).
    search_space: ClassVar[dict[str, Any]] = {
        "lr": {"log_uniform": [1e-3, 1.0]},
        "momentum": {"one_minus_log_uniform": [0.5, 0.99]},
        "nesterov": {"choice": [False, True]},
        "weight_decay": {"log_uniform_or_zero": [1e-6, 1e-2]},
    }

    _update = staticmethod(sgd_update)
    _group_defaults: ClassVar[dict[str, Any]] = {  # as torch.optim.SGD.__setstate__
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": False,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: Scalar = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check.check_lr(lr)
        check.check_nonnegative("momentum", momentum)
        check.check_in_unit_interval("dampening", dampening, closed_right=True)
        check.check_nonnegative("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Nesterov momentum requires a momentum and zero dampening (got momentum={momentum}, "
                f"dampening={dampening}); use momentum > 0 and dampening=0, or nesterov=False"
            )
        check.check_implementation_flags("SGD", foreach, fused, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _scalars(self, group: dict[str, Any], step: float) -> SgdScalars:
        return SgdScalars(
            hyper(group["lr"]),
            float(group["weight_decay"]),
            float(group["momentum"]),
            *momentum_scalars(group, first_step=step == 0.0),
        )

    def _flags(self, group: dict[str, Any]) -> dict[str, bool]:
        return {
            "maximize": bool(group["maximize"]),
            "has_weight_decay": float(group["weight_decay"]) != 0,
            "has_momentum": float(group["momentum"]) != 0,
            "nesterov": bool(group["nesterov"]),
        }
