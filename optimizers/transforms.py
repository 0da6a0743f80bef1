"""The update formulas, one place each.

Every optimizer in this package is a composition of these per-tensor primitives (the optax idea:
maths here, recipes in the optimizer modules). Each primitive takes its scalar hyperparameters as
either Python floats (eager step) or 0-dim tensors (compiled step), so the very same formulas run in
both modes. With floats a primitive uses torch's fused in-place ops (`add_(alpha=)`, `addcmul_`,
`addcdiv_`: the ops torch.optim's reference loop uses, and the fewest dispatches for small tensors);
those ops only take Python numbers, so with tensors it spells the same arithmetic out and leaves the
fusing to the compiler. Functions ending in `_` update their first argument in place.

Scalars that depend only on hyperparameters and the step count (bias corrections, step sizes) are
computed once per step on the host in float64 by the optimizers, not here.
"""

from __future__ import annotations

import torch
from torch import Tensor

Scalar = float | Tensor


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _is_number(x: Scalar) -> bool:
    """A Python number that torch's fused ops accept as a float32 scalar (they reject one that
    overflows; the spelled-out arithmetic then overflows to inf like any other float math)."""
    return isinstance(x, (int, float)) and -_FLOAT32_MAX <= x <= _FLOAT32_MAX


def oriented_grad(grad: Tensor, maximize: bool) -> Tensor:
    """The direction to descend: the gradient, or its negation when maximizing."""
    return -grad if maximize else grad


def add_l2_penalty(grad: Tensor, param: Tensor, weight_decay: Scalar) -> Tensor:
    """Coupled weight decay: the gradient of the loss plus weight_decay/2 * ||param||^2."""
    if _is_number(weight_decay):
        return grad.add(param, alpha=weight_decay)
    return grad + weight_decay * param


def shrink_weights_(param: Tensor, factor: Scalar) -> None:
    """Decoupled weight decay (Loshchilov & Hutter): param *= 1 - lr * weight_decay (= factor)."""
    param.mul_(factor)


def ema_(average: Tensor, value: Tensor, decay: Scalar, one_minus_decay: Scalar) -> Tensor:
    """Exponential moving average: average = decay * average + (1 - decay) * value."""
    if _is_number(one_minus_decay):
        return average.mul_(decay).add_(value, alpha=one_minus_decay)
    return average.mul_(decay).add_(value * one_minus_decay)


def ema_of_square_(average: Tensor, value: Tensor, decay: Scalar, one_minus_decay: Scalar) -> Tensor:
    """Exponential moving average of value**2 (Adam's and RMSprop's second moment)."""
    if _is_number(one_minus_decay):
        return average.mul_(decay).addcmul_(value, value, value=one_minus_decay)
    return average.mul_(decay).add_(value * value * one_minus_decay)


def accumulate_square_(total: Tensor, value: Tensor) -> Tensor:
    """Running sum of value**2 (Adagrad)."""
    return total.addcmul_(value, value)


def heavy_ball_(buffer: Tensor, direction: Tensor, decay: Scalar, scale: Scalar) -> Tensor:
    """Momentum buffer: buffer = decay * buffer + scale * direction.

    With decay = momentum and scale = 1 - dampening this is torch's SGD momentum; the optimizers pass
    decay = 0, scale = 1 on a buffer's first step, which makes it a copy of the direction as torch does.
    """
    if _is_number(scale):
        return buffer.mul_(decay).add_(direction, alpha=scale)
    return buffer.mul_(decay).add_(direction * scale)


def nesterov_direction(direction: Tensor, buffer: Tensor, momentum: Scalar) -> Tensor:
    """Nesterov's look-ahead: direction + momentum * buffer."""
    if _is_number(momentum):
        return direction.add(buffer, alpha=momentum)
    return direction + momentum * buffer


def running_max_(maximum: Tensor, value: Tensor) -> Tensor:
    """AMSGrad's running maximum of the second moment."""
    return torch.maximum(maximum, value, out=maximum)


def adam_denominator(second_moment: Tensor, bias_correction2_sqrt: Scalar, eps: Scalar) -> Tensor:
    """sqrt(v_hat) + eps, with v_hat = v / (1 - beta2^t) (a new tensor)."""
    return second_moment.sqrt().div_(bias_correction2_sqrt).add_(eps)


def rms_denominator(square_avg: Tensor, grad_avg: Tensor | None, eps: Scalar) -> Tensor:
    """RMSprop's sqrt(E[g^2] - E[g]^2) + eps (centered) or sqrt(E[g^2]) + eps (a new tensor).

    The centered variance is clamped at 0: with a steady gradient E[g^2] - E[g]^2 is 0 in exact
    arithmetic but can round to a tiny negative number, where torch.optim's sqrt gives NaN.
    """
    if grad_avg is not None:
        return square_avg.addcmul(grad_avg, grad_avg, value=-1).clamp_min_(0).sqrt_().add_(eps)
    return square_avg.sqrt().add_(eps)


def tensor_norm(tensor: Tensor, batch_dims: int = 0) -> Tensor:
    """The 2-norm of `tensor` (LARS, LAMB: one norm per whole tensor). With `batch_dims` leading
    dimensions that index independent tensors (fused members, ``[K, ...]``): one norm each, over every
    other dimension, kept as size-1 dimensions so that it broadcasts against `tensor`."""
    if batch_dims == 0:
        return tensor.norm()
    dims = tuple(range(batch_dims, tensor.ndim))
    if not dims:  # each member's tensor is a scalar (vector_norm would reduce over everything)
        return tensor.abs()
    return torch.linalg.vector_norm(tensor, dim=dims, keepdim=True)


def trust_ratio(numerator_norm: Tensor, denominator_norm: Tensor, coefficient: Tensor) -> Tensor:
    """Layer-wise trust ratio (LARS, LAMB): coefficient, or 1 when either norm is zero."""
    usable = (numerator_norm > 0) & (denominator_norm > 0)
    return torch.where(usable, coefficient, torch.ones_like(coefficient))


def descend_(param: Tensor, update: Tensor, step_size: Scalar) -> None:
    """param -= step_size * update."""
    if _is_number(step_size):
        param.add_(update, alpha=-step_size)
    else:
        param.sub_(update * step_size)


def descend_ratio_(param: Tensor, numerator: Tensor, denominator: Tensor, step_size: Scalar) -> None:
    """param -= step_size * numerator / denominator (Adam, Adagrad, RMSprop)."""
    if _is_number(step_size):
        param.addcdiv_(numerator, denominator, value=-step_size)
    else:
        param.sub_(numerator / denominator * step_size)
