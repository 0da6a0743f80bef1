"""Your own optimizer: Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), a
`torch.optim.Optimizer` written outside optsweep, with the search space it is tuned in.

    python -m sweeps examples/lion_vs_adam.yaml             # Lion vs Adam on the digits MLP
    python sweeps/adam_vs_sgd.py --optimizers adam,examples/lion.py:Lion

The update: c = beta1 m + (1 - beta1) g; p -= lr (sign(c) + wd p); m = beta2 m + (1 - beta2) g.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch


class Lion(torch.optim.Optimizer):
    # The space a study tunes Lion in (optsweep reads this attribute; a study file may replace it).
    # Lion's sign update has a fixed size per step, so it wants a learning rate 3-10x below Adam's.
    search_space: ClassVar[dict[str, Any]] = {
        "lr": {"log_uniform": [1e-5, 1e-2]},
        "beta1": {"one_minus_log_uniform": [0.8, 0.95]},
        "beta2": {"one_minus_log_uniform": [0.95, 0.999]},
        "weight_decay": {"log_uniform_or_zero": [1e-4, 1.0]},
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"Invalid betas: {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                momentum = self.state[param].setdefault("exp_avg", torch.zeros_like(param))
                update = momentum.mul(beta1).add_(param.grad, alpha=1 - beta1).sign_()
                param.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                momentum.mul_(beta2).add_(param.grad, alpha=1 - beta2)
        return loss
