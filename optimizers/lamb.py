"""LAMB: layer-wise adaptive moments for large batches (You et al., 2019, arXiv:1904.00962, Alg. 2)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from torch import Tensor
from torch.optim.optimizer import ParamsT

from . import _validation as check
from ._engine import FusableOptimizer, hyper
from .adam import init_moments, moment_scalars
from .transforms import (
    Scalar,
    adam_denominator,
    descend_,
    ema_,
    ema_of_square_,
    oriented_grad,
    tensor_norm,
    trust_ratio,
)


class LambScalars(NamedTuple):
    """One step's scalars (Python floats eagerly, tensors when compiled)."""

    beta1: Scalar
    one_minus_beta1: Scalar
    beta2: Scalar
    one_minus_beta2: Scalar
    inverse_bias_correction1: Scalar  # 1 / (1 - beta1^t)
    bias_correction2_sqrt: Scalar  # sqrt(1 - beta2^t)
    eps: Scalar
    weight_decay: Scalar
    lr: Scalar


def lamb_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    scalars: LambScalars | Tensor,
    *,
    maximize: bool,
    has_weight_decay: bool,
    batch_dims: int = 0,
) -> None:
    """One LAMB step of each parameter. `batch_dims`: leading dimensions of independent tensors (fused
    members, `optimizers.members`), each with its own trust ratio; the scalars broadcast over them."""
    s = scalars if type(scalars) is LambScalars else LambScalars._make(scalars)  # compiled: a tensor
    for i, param in enumerate(params):
        grad = oriented_grad(grads[i], maximize)
        first_moment = ema_(exp_avgs[i], grad, s.beta1, s.one_minus_beta1)
        second_moment = ema_of_square_(exp_avg_sqs[i], grad, s.beta2, s.one_minus_beta2)
        denominator = adam_denominator(second_moment, s.bias_correction2_sqrt, s.eps)
        update = first_moment * s.inverse_bias_correction1 / denominator
        if has_weight_decay:
            update = update + s.weight_decay * param
        weight_norm, update_norm = tensor_norm(param, batch_dims), tensor_norm(update, batch_dims)
        ratio = trust_ratio(weight_norm, update_norm, weight_norm / update_norm)
        descend_(param, update, s.lr * ratio)


class LAMB(FusableOptimizer):
    """LAMB: Adam's direction plus decoupled weight decay, rescaled per tensor by ||w|| / ||update||.

    x <- x - lr * (||x|| / ||r + wd*x||) * (r + wd*x), r = m_hat / (sqrt(v_hat) + eps); the trust ratio
    is 1 where either norm is zero (freshly zeroed weights, zero update).
    """

    # The nuisance hyperparameters a study tunes, and where (sweeps.search.spaces reads this; plain data).
    search_space: ClassVar[dict[str, Any]] = {
        "lr": {"log_uniform": [1e-4, 1e-1]},
        "beta1": {"one_minus_log_uniform": [0.8, 0.98]},
        "beta2": {"one_minus_log_uniform": [0.9, 0.9995]},
        "weight_decay": {"log_uniform_or_zero": [1e-5, 1e-1]},
    }

    _update = staticmethod(lamb_update)
    _per_tensor_norms = True
    _state_names = ("exp_avg", "exp_avg_sq")
    _group_defaults: ClassVar[dict[str, Any]] = {"maximize": False, "foreach": None, "fused": None}

    def __init__(
        self,
        params: ParamsT,
        lr: Scalar = 1e-3,
        betas: tuple[Scalar, Scalar] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check.check_lr(lr)
        check.check_nonnegative("eps", eps, label="epsilon")
        check.check_betas(betas)
        check.check_nonnegative("weight_decay", weight_decay)
        check.check_implementation_flags("LAMB", foreach, fused)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        init_moments(self.state[param], param)

    def _scalars(self, group: dict[str, Any], step: Scalar) -> LambScalars:
        beta1, one_minus_beta1, beta2, one_minus_beta2, bc1, bc2_sqrt = moment_scalars(group, step)
        return LambScalars(
            beta1,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            1 / bc1,
            bc2_sqrt,
            float(group["eps"]),
            float(group["weight_decay"]),
            hyper(group["lr"]),
        )

    def _flags(self, group: dict[str, Any]) -> dict[str, bool]:
        return {"maximize": bool(group["maximize"]), "has_weight_decay": float(group["weight_decay"]) != 0}
