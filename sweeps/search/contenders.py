"""The optimizers a study compares: optsweep's by name, or a user's `torch.optim.Optimizer` subclass by
import path, each with the search space of its nuisance hyperparameters.

A built-in optimizer's space is `spaces.SPACES`; a user's optimizer declares its own, in the study file
(``optimizers: {lion: {class: my_pkg.opt:Lion, space: {...}}}``), in Python
(``Study(optimizers={"lion": Lion}, spaces={"lion": {...}})``) or as a ``search_space`` class attribute
in the same plain form. A declared space may also replace a built-in optimizer's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optsweep.errors import OptsweepError
from optsweep.sweeps.record import layout
from optsweep.sweeps.search import spaces
from optsweep.trainables import optimizer_choice

SPACE_ATTRIBUTE = "search_space"
"""Class attribute in which an optimizer may declare its own search space (plain form)."""
LABEL_PATTERN = r"[a-z0-9][a-z0-9_.-]*"


@dataclass(frozen=True)
class Contender:
    """One optimizer of a study: `label` names its experiment directory and its rows in the report."""

    label: str
    reference: str  # a registered name or an import path
    params: dict[str, spaces.Param]
    cls: type | None = None  # a user's optimizer class (sent to the trials); None: a registered one

    def record(self) -> dict[str, Any]:
        return {"optimizer": self.reference, "space": spaces.space_to_json(self.params)}


def reference_of(cls: type) -> str:
    """The import path of an optimizer class given in Python (a record; the class itself is sent)."""
    return f"{cls.__module__}:{cls.__qualname__}"


def label_of(reference: str) -> str:
    """``adam`` -> ``adam``; ``my_pkg.opt:Lion`` -> ``lion``."""
    if optimizer_choice.is_reference(reference):
        return reference.rpartition(":")[2].rpartition(".")[2].lower()
    return reference.strip().lower()


def resolve(
    references: Mapping[str, str], declared: Mapping[str, Any], objects: Mapping[str, type] | None = None
) -> list[Contender]:
    """Each optimizer (label -> reference) with its space; raises ValueError with one line for an optimizer
    that does not resolve, lacks a space, or whose space names a hyperparameter it does not take.
    `objects` holds classes given directly in Python, by label."""
    objects = objects or {}
    contenders = []
    for label, reference in references.items():
        if not re.fullmatch(LABEL_PATTERN, label):
            raise OptsweepError(
                f"optimizer label {label!r} is invalid: use lowercase letters, digits, '_', '.' and '-'"
            )
        if label in layout.RESERVED:
            raise OptsweepError(
                f"optimizer label {label!r} is invalid: {', '.join(layout.RESERVED)} name a study's own "
                "directories; choose another label"
            )
        cls = objects[label] if label in objects else optimizer_choice.resolve(reference)
        if label in declared:
            params = spaces.parse_space(_plain(declared[label], label))
        elif getattr(cls, SPACE_ATTRIBUTE, None) is not None:
            params = spaces.parse_space(_plain(getattr(cls, SPACE_ATTRIBUTE), label))
        elif not optimizer_choice.is_reference(reference):
            params = spaces.default_params(reference)
        else:
            raise OptsweepError(
                f"optimizer {reference!r} has no search space: declare one, e.g. "
                f"{SPACE_ATTRIBUTE} = {{'lr': {{'log_uniform': [1e-5, 1e-2]}}}} as a class attribute, "
                f"or in the study file (search_spaces: {label}: ...; in Python Study(search_spaces=...))"
            )
        valid = set(optimizer_choice.hyperparameter_names(cls))
        unknown = sorted(set(params) - valid)
        if unknown:
            raise OptsweepError(
                f"the search space of {label} names {', '.join(unknown)}, which {cls.__name__} does not "
                f"take; it takes: {', '.join(sorted(valid))}"
            )
        user_class = cls if optimizer_choice.is_reference(reference) else None
        contenders.append(Contender(label, reference, params, user_class))
    return contenders


def _plain(space: Any, label: str) -> dict[str, Any]:
    if not isinstance(space, Mapping):
        raise OptsweepError(
            f"the search space of {label} must map hyperparameter names to distributions, got {space!r}"
        )
    return dict(space)
