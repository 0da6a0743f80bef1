"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017, arXiv:1708.03888, Alg. 1)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from torch import Tensor
from torch.optim.optimizer import ParamsT

from . import _validation as check
from ._engine import hyper
from .sgd import MomentumBufferOptimizer
from .transforms import (
    Scalar,
    add_l2_penalty,
    descend_,
    heavy_ball_,
    nesterov_direction,
    oriented_grad,
    tensor_norm,
    trust_ratio,
)


class LarsScalars(NamedTuple):
    """One step's scalars (Python floats eagerly, tensors when compiled)."""

    lr: Scalar
    weight_decay: Scalar
    momentum: Scalar
    trust_coefficient: Scalar
    eps: Scalar


def lars_update(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    scalars: LarsScalars | Tensor,
    *,
    maximize: bool,
    has_momentum: bool,
    nesterov: bool,
    batch_dims: int = 0,
) -> None:
    """One LARS step of each parameter. `batch_dims`: leading dimensions of independent tensors (fused
    members, `optimizers.members`), each with its own trust ratio; the scalars broadcast over them."""
    s = scalars if type(scalars) is LarsScalars else LarsScalars._make(scalars)  # compiled: a tensor
    for i, param in enumerate(params):
        grad = oriented_grad(grads[i], maximize)
        weight_norm, grad_norm = tensor_norm(param, batch_dims), tensor_norm(grad, batch_dims)
        local_lr = s.trust_coefficient * weight_norm / (grad_norm + s.weight_decay * weight_norm + s.eps)
        ratio = trust_ratio(weight_norm, grad_norm, local_lr)
        direction = add_l2_penalty(grad, param, s.weight_decay) * ratio
        if has_momentum:
            buffer = heavy_ball_(momentum_buffers[i], direction, s.momentum, 1.0)
            direction = nesterov_direction(direction, buffer, s.momentum) if nesterov else buffer
        descend_(param, direction, s.lr)


class LARS(MomentumBufferOptimizer):
    """LARS: SGD with momentum whose step is rescaled per tensor by the local LR
    trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps) (1 where ||w|| or ||g|| is zero).

    The paper keeps the global LR inside the momentum buffer (v = m*v + lr*local_lr*(g + wd*w); w -= v);
    here, as in torch's SGD, it multiplies the buffer (buf = m*buf + local_lr*(g + wd*w); w -= lr*buf),
    which is the same trajectory for a constant LR and lets LR schedules act immediately.
    """

    # The trust ratio (1e-3 * ||w|| / ||g||) scales the step, so LARS wants much larger global LRs.
    search_space: ClassVar[dict[str, Any]] = {
        "lr": {"log_uniform": [1e-1, 1e2]},
        "momentum": {"one_minus_log_uniform": [0.5, 0.99]},
        "weight_decay": {"log_uniform_or_zero": [1e-6, 1e-2]},
    }

    _update = staticmethod(lars_update)
    _per_tensor_norms = True
    _group_defaults: ClassVar[dict[str, Any]] = {
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "fused": None,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: Scalar = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0,
        trust_coefficient: float = 1e-3,
        eps: float = 1e-8,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check.check_lr(lr)
        check.check_nonnegative("momentum", momentum)
        check.check_nonnegative("weight_decay", weight_decay)
        check.check_nonnegative("trust_coefficient", trust_coefficient)
        check.check_nonnegative("eps", eps, label="epsilon")
        if nesterov and momentum <= 0:
            raise ValueError(
                f"Nesterov momentum requires a momentum (got momentum={momentum}); use momentum > 0"
            )
        check.check_implementation_flags("LARS", foreach, fused)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _scalars(self, group: dict[str, Any], step: float) -> LarsScalars:
        return LarsScalars(
            hyper(group["lr"]),
            float(group["weight_decay"]),
            float(group["momentum"]),
            float(group["trust_coefficient"]),
            float(group["eps"]),
        )

    def _flags(self, group: dict[str, Any]) -> dict[str, bool]:
        return {
            "maximize": bool(group["maximize"]),
            "has_momentum": float(group["momentum"]) != 0,
            "nesterov": bool(group["nesterov"]),
        }
