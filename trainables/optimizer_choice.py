"""The optimizer a run uses: one of optsweep's by name (`optimizers.names()`), or any
`torch.optim.Optimizer` subclass by import path (``my_pkg.opt:Lion`` or ``path/to/opt.py:Lion``)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from optsweep import optimizers

from .tasks import TaskError, load_reference


def is_reference(name: str) -> bool:
    """Whether `name` is an import path rather than a registered optimizer name."""
    return ":" in name


def resolve(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class `name` stands for; a one-line ValueError when it does not resolve."""
    if not is_reference(name):
        return optimizers.optimizer_class(name)
    cls = load_reference(name, "optimizer")
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise TaskError(f"optimizer {name!r} is not a torch.optim.Optimizer subclass: {cls!r}")
    return cls


def hyperparameter_names(cls: type[torch.optim.Optimizer]) -> list[str]:
    """The keyword arguments `cls` takes besides its params (``betas`` also as ``beta1``/``beta2``)."""
    names = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "params") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if "betas" in names:
        names += ["beta1", "beta2"]
    return names


def build(
    name: str, params: Any, hparams: dict[str, Any], cls: type[torch.optim.Optimizer] | None = None
) -> torch.optim.Optimizer:
    """Build optimizer `name` over `params` (tensors or param groups) with `hparams`; `cls`, when given,
    is the class `name` stands for (a user's class sent along instead of imported again)."""
    if cls is None and not is_reference(name):
        return optimizers.build(name, params, **hparams)
    cls = cls or resolve(name)
    hparams = dict(hparams)
    valid = hyperparameter_names(cls)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise TaskError(
            f"Unknown hyperparameter(s) {', '.join(unknown)} for optimizer {name!r}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    if "beta1" in hparams or "beta2" in hparams:
        defaults = inspect.signature(cls.__init__).parameters["betas"].default
        if defaults is inspect.Parameter.empty and not ("beta1" in hparams and "beta2" in hparams):
            raise TaskError(f"optimizer {name!r} has no default betas: give both beta1 and beta2")
        hparams["betas"] = (hparams.pop("beta1", defaults[0]), hparams.pop("beta2", defaults[1]))
    return cls(params, **hparams)
