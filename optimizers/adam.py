"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from torch import Tensor
from torch.optim.optimizer import ParamsT

from . import _validation as check
from ._engine import FusableOptimizer, hyper, step_counter, zeros_like
from .transforms import (
    Scalar,
    adam_denominator,
    add_l2_penalty,
    descend_ratio_,
    ema_,
    ema_of_square_,
    oriented_grad,
    running_max_,
    shrink_weights_,
)


class AdamScalars(NamedTuple):
    """One step's scalars (Python floats eagerly, tensors when compiled)."""

    beta1: Scalar
    one_minus_beta1: Scalar
    beta2: Scalar
    one_minus_beta2: Scalar
    step_size: Scalar  # lr / (1 - beta1^t)
    bias_correction2_sqrt: Scalar  # sqrt(1 - beta2^t)
    eps: Scalar
    weight_decay: Scalar
    shrink: Scalar  # 1 - lr * weight_decay, decoupled decay's factor


def adam_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    scalars: AdamScalars | Tensor,
    *,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    has_weight_decay: bool,
) -> None:
    s = scalars if type(scalars) is AdamScalars else AdamScalars._make(scalars)  # compiled: a tensor
    for i, param in enumerate(params):
        grad = oriented_grad(grads[i], maximize)
        if has_weight_decay:
            if decoupled_weight_decay:
                shrink_weights_(param, s.shrink)
            else:
                grad = add_l2_penalty(grad, param, s.weight_decay)
        ema_(exp_avgs[i], grad, s.beta1, s.one_minus_beta1)
        second_moment = ema_of_square_(exp_avg_sqs[i], grad, s.beta2, s.one_minus_beta2)
        if amsgrad:
            second_moment = running_max_(max_exp_avg_sqs[i], second_moment)
        denominator = adam_denominator(second_moment, s.bias_correction2_sqrt, s.eps)
        descend_ratio_(param, exp_avgs[i], denominator, s.step_size)


def init_moments(state: dict[str, Any], param: Tensor) -> None:
    """Adam's state (torch's layout): the step count and both moment estimates."""
    state["step"] = step_counter()
    state["exp_avg"] = zeros_like(param)
    state["exp_avg_sq"] = zeros_like(param)


def moment_scalars(group: dict[str, Any], step: Scalar) -> tuple[Scalar, ...]:
    """Adam's and LAMB's moment scalars at step t: (beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta1^t,
    sqrt(1 - beta2^t)), in float64 like torch's loop (eagerly)."""
    beta1, beta2 = group["betas"]
    beta1, beta2 = hyper(beta1), hyper(beta2)
    return beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta1**step, (1 - beta2**step) ** 0.5


class Adam(FusableOptimizer):
    """Adam, a drop-in for `torch.optim.Adam`: same arguments, defaults, state and trajectory.

    `decoupled_weight_decay=True` gives AdamW. `foreach` is accepted for compatibility; `fused=True`
    forces the compiled step, `fused=False` the eager one, `None` picks by size (see `_engine`).
    """

    # The nuisance hyperparameters a study tunes, and where (sweeps.search.spaces reads this; plain data).
    search_space: ClassVar[dict[str, Any]] = {
        "lr": {"log_uniform": [1e-4, 1e-1]},
        "beta1": {"one_minus_log_uniform": [0.8, 0.98]},
        "beta2": {"one_minus_log_uniform": [0.9, 0.9995]},
        "eps": {"log_uniform": [1e-10, 1e-6]},
        "weight_decay": {"log_uniform_or_zero": [1e-6, 1e-2]},
    }

    _update = staticmethod(adam_update)
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _group_defaults: ClassVar[dict[str, Any]] = {  # as torch.optim.Adam.__setstate__
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
        "fused": None,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: Scalar = 1e-3,
        betas: tuple[Scalar, Scalar] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check.check_lr(lr)
        check.check_nonnegative("eps", eps, label="epsilon")
        check.check_betas(betas)
        check.check_nonnegative("weight_decay", weight_decay)
        check.check_implementation_flags(
            type(self).__name__, foreach, fused, capturable=capturable, differentiable=differentiable
        )
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        init_moments(self.state[param], param)
        if group["amsgrad"]:
            self.state[param]["max_exp_avg_sq"] = zeros_like(param)

    def _active_state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self._state_names if group["amsgrad"] else self._state_names[:2]

    def _scalars(self, group: dict[str, Any], step: Scalar) -> AdamScalars:
        lr, weight_decay = hyper(group["lr"]), float(group["weight_decay"])
        beta1, one_minus_beta1, beta2, one_minus_beta2, bc1, bc2_sqrt = moment_scalars(group, step)
        # Positional: a NamedTuple built with keywords costs a microsecond more per step.
        return AdamScalars(
            beta1,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            lr / bc1,
            bc2_sqrt,
            float(group["eps"]),
            weight_decay,
            1 - lr * weight_decay,
        )

    def _flags(self, group: dict[str, Any]) -> dict[str, bool]:
        return {
            "amsgrad": bool(group["amsgrad"]),
            "maximize": bool(group["maximize"]),
            "decoupled_weight_decay": bool(group["decoupled_weight_decay"]),
            "has_weight_decay": float(group["weight_decay"]) != 0,
        }


class AdamW(Adam):
    """AdamW, a drop-in for `torch.optim.AdamW`: Adam with decoupled weight decay (default 1e-2).

    Like torch's, it keeps decoupled decay whatever state dict it loads (one from Adam included)."""

    # Decoupled weight decay is scaled by the LR, so AdamW's useful range sits higher than Adam's.
    search_space: ClassVar[dict[str, Any]] = {
        **Adam.search_space,
        "weight_decay": {"log_uniform_or_zero": [1e-5, 1e-1]},
    }

    def _fix_group(self, group: dict[str, Any]) -> None:
        group["decoupled_weight_decay"] = True

    def __init__(
        self,
        params: ParamsT,
        lr: Scalar = 1e-3,
        betas: tuple[Scalar, Scalar] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )
