"""The update formulas, one place each.

Every optimizer in this package is a composition of these per-tensor primitives (the optax idea:
maths here, recipes in the optimizer modules). Each primitive takes its scalar hyperparameters as
either Python floats (eager step) or 0-dim tensors (compiled step), so the very same code runs in
both modes; that is why they use plain arithmetic instead of ops such as `addcmul_(value=...)` that
only accept Python numbers. Functions ending in `_` update their first argument in place.

Scalars that depend only on hyperparameters and the step count (bias corrections, step sizes) are
computed once per step on the host in float64 by the optimizers, not here.
"""

from __future__ import annotations

import torch
from torch import Tensor

Scalar = float | Tensor


def oriented_grad(grad: Tensor, maximize: bool) -> Tensor:
    """The direction to descend: the gradient, or its negation when maximizing."""
    return -grad if maximize else grad


def add_l2_penalty(grad: Tensor, param: Tensor, weight_decay: Scalar) -> Tensor:
    """Coupled weight decay: the gradient of the loss plus weight_decay/2 * ||param||^2."""
    return grad + weight_decay * param


def shrink_weights_(param: Tensor, factor: Scalar) -> None:
    """Decoupled weight decay (Loshchilov & Hutter): param *= 1 - lr * weight_decay (= factor)."""
    param.mul_(factor)


def ema_(average: Tensor, value: Tensor, decay: Scalar, one_minus_decay: Scalar) -> Tensor:
    """Exponential moving average: average = decay * average + (1 - decay) * value."""
    return average.mul_(decay).add_(value * one_minus_decay)


def ema_of_square_(average: Tensor, value: Tensor, decay: Scalar, one_minus_decay: Scalar) -> Tensor:
    """Exponential moving average of value**2 (Adam's and RMSprop's second moment)."""
    return average.mul_(decay).add_(value * value * one_minus_decay)


def accumulate_square_(total: Tensor, value: Tensor) -> Tensor:
    """Running sum of value**2 (Adagrad)."""
    return total.add_(value * value)


def heavy_ball_(buffer: Tensor, direction: Tensor, decay: Scalar, scale: Scalar) -> Tensor:
    """Momentum buffer: buffer = decay * buffer + scale * direction.

    With decay = momentum and scale = 1 - dampening this is torch's SGD momentum; the optimizers pass
    decay = 0, scale = 1 on a buffer's first step, which makes it a copy of the direction as torch does.
    """
    return buffer.mul_(decay).add_(direction * scale)


def nesterov_direction(direction: Tensor, buffer: Tensor, momentum: Scalar) -> Tensor:
    """Nesterov's look-ahead: direction + momentum * buffer."""
    return direction + momentum * buffer


def running_max_(maximum: Tensor, value: Tensor) -> Tensor:
    """AMSGrad's running maximum of the second moment."""
    return maximum.copy_(torch.maximum(maximum, value))


def adam_denominator(second_moment: Tensor, bias_correction2_sqrt: Scalar, eps: Scalar) -> Tensor:
    """sqrt(v_hat) + eps, with v_hat = v / (1 - beta2^t)."""
    return second_moment.sqrt() / bias_correction2_sqrt + eps


def rms_denominator(square_avg: Tensor, grad_avg: Tensor | None, eps: Scalar) -> Tensor:
    """RMSprop's sqrt(E[g^2] - E[g]^2) + eps (centered) or sqrt(E[g^2]) + eps.

    The centered variance is clamped at 0: with a steady gradient E[g^2] - E[g]^2 is 0 in exact
    arithmetic but can round to a tiny negative number, where torch.optim's sqrt gives NaN.
    """
    if grad_avg is not None:
        return (square_avg - grad_avg * grad_avg).clamp_min(0).sqrt() + eps
    return square_avg.sqrt() + eps


def trust_ratio(numerator_norm: Tensor, denominator_norm: Tensor, coefficient: Tensor) -> Tensor:
    """Layer-wise trust ratio (LARS, LAMB): coefficient, or 1 when either norm is zero."""
    usable = (numerator_norm > 0) & (denominator_norm > 0)
    return torch.where(usable, coefficient, torch.ones_like(coefficient))


def descend_(param: Tensor, update: Tensor, step_size: Scalar) -> None:
    """param -= step_size * update."""
    param.sub_(update * step_size)
