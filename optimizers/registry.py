"""Optimizers by name: what the sweeps and trainables build from a config."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.optim.optimizer import ParamsT

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lamb import LAMB
from .lars import LARS
from .rmsprop import RMSprop
from .sgd import SGD

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "lamb": LAMB,
    "lars": LARS,
}


def names() -> list[str]:
    """The registered optimizer names, in a stable order."""
    return list(OPTIMIZERS)


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    key = name.strip().lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def build(name: str, params: ParamsT, **hparams: Any) -> torch.optim.Optimizer:
    """Build the optimizer `name` over `params`; `beta1`/`beta2` may be given instead of `betas`.

    Unknown hyperparameters are an error naming the valid ones (a typo must not be silently ignored).
    """
    cls = optimizer_class(name)
    hparams = dict(hparams)
    valid = _signature_defaults(cls)
    if ("beta1" in hparams or "beta2" in hparams) and "betas" in valid:
        if "betas" in hparams:
            raise ValueError("Give either betas or beta1/beta2, not both")
        default_betas = valid["betas"]
        hparams["betas"] = (hparams.pop("beta1", default_betas[0]), hparams.pop("beta2", default_betas[1]))
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {', '.join(unknown)} for optimizer {name!r}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    return cls(params, **hparams)


def _signature_defaults(cls: type[torch.optim.Optimizer]) -> dict[str, Any]:
    return {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "params")
    }
