"""Constructor checks shared by the optimizers.

Each message starts with torch.optim's wording for the same mistake (so code that matches on it keeps
working) and then names the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Scalar = float | torch.Tensor


def _value(x: Scalar) -> float:
    try:
        return float(x.item()) if isinstance(x, torch.Tensor) else float(x)
    except OverflowError:  # an int beyond float range: as good as infinite, and rejected as such
        return math.inf if x > 0 else -math.inf


def check_lr(lr: Scalar) -> None:
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError(f"Tensor lr must be 1-element (got shape {tuple(lr.shape)})")
    if not _value(lr) >= 0.0 or math.isinf(_value(lr)):
        raise ValueError(f"Invalid learning rate: {lr}; lr must be a finite number >= 0")


def check_nonnegative(name: str, value: Scalar, *, label: str | None = None) -> None:
    """`value` must be a finite number >= 0 (eps, weight_decay, momentum, lr_decay, ...)."""
    v = _value(value)
    if not v >= 0.0 or math.isinf(v):
        raise ValueError(f"Invalid {label or name} value: {value}; {name} must be a finite number >= 0")


def check_in_unit_interval(name: str, value: float, *, closed_right: bool) -> None:
    """`value` must lie in [0, 1] (closed_right) or [0, 1)."""
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"Invalid {name} value: {value}; {name} must be in {interval}")


def check_betas(betas: Sequence[Scalar]) -> tuple[float, float]:
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas}; betas must be a pair (beta1, beta2)")
    both_float = all(isinstance(b, (int, float)) for b in betas)
    both_tensor = all(isinstance(b, torch.Tensor) for b in betas)
    if not (both_float or both_tensor):
        raise ValueError("betas must be either both floats or both Tensors")
    for index, beta in enumerate(betas):
        if isinstance(beta, torch.Tensor) and beta.numel() != 1:
            raise ValueError(f"Tensor betas[{index}] must be 1-element")
        if not 0.0 <= _value(beta) < 1.0:
            raise ValueError(
                f"Invalid beta parameter at index {index}: {beta}; betas[{index}] must be in [0, 1)"
            )
    return _value(betas[0]), _value(betas[1])


def check_implementation_flags(
    name: str, foreach: bool | None, fused: bool | None, **must_be_false: bool
) -> None:
    """torch.optim's implementation switches: accepted for drop-in compatibility, validated like torch."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    for flag, value in must_be_false.items():
        if value:
            raise ValueError(
                f"{name}: {flag}=True is not supported by optsweep's optimizers; {flag} must be False"
            )
