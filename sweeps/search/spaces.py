"""Per-optimizer search spaces: the nuisance hyperparameters tuned for each optimizer.

In an optimizer comparison the optimizer is the scientific parameter; its learning rate, momentum,
betas, eps and weight decay are nuisance parameters, tuned per optimizer with the same budget
(google-research/tuning_playbook). Every space here is sampled two ways: `sample(rng)` for random
search (configurations drawn up front, so all seeds of a configuration share it exactly) and
`suggest(trial)` as an Optuna define-by-run function for TPE. Optuna-only helper choices are named
with a leading `__`, which the rest of optsweep ignores.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from optsweep import optimizers
from optsweep.errors import OptsweepError
from optsweep.sweeps.spec import DEFAULT_SCHEDULES

SCHEDULES = DEFAULT_SCHEDULES
"""The LR schedules swept by default: every optimizer gets the same choice."""


class Param(Protocol):
    def sample(self, rng: np.random.Generator) -> Any: ...
    def suggest(self, trial: Any, name: str) -> Any: ...


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)

    def to_json(self) -> dict[str, Any]:
        return {"log_uniform": [self.low, self.high]}


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)

    def to_json(self) -> dict[str, Any]:
        return {"uniform": [self.low, self.high]}


@dataclass(frozen=True)
class OneMinusLogUniform:
    """1 - x with x log-uniform in [1 - high, 1 - low]: momenta and betas near 1 (0.9, 0.99, 0.999)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return 1.0 - LogUniform(1.0 - self.high, 1.0 - self.low).sample(rng)

    def suggest(self, trial: Any, name: str) -> float:
        complement = trial.suggest_float(f"__one_minus_{name}", 1.0 - self.high, 1.0 - self.low, log=True)
        return 1.0 - complement

    def to_json(self) -> dict[str, Any]:
        return {"one_minus_log_uniform": [self.low, self.high]}


@dataclass(frozen=True)
class LogUniformOrZero:
    """0 with probability `p_zero`, else log-uniform: weight decay, where "none" is a real contender."""

    low: float
    high: float
    p_zero: float = 0.25

    def sample(self, rng: np.random.Generator) -> float:
        return 0.0 if rng.uniform() < self.p_zero else LogUniform(self.low, self.high).sample(rng)

    def suggest(self, trial: Any, name: str) -> float:
        if trial.suggest_categorical(f"__{name}_is_zero", [True, False]):
            return 0.0
        return trial.suggest_float(name, self.low, self.high, log=True)

    def to_json(self) -> dict[str, Any]:
        return {"log_uniform_or_zero": [self.low, self.high, self.p_zero]}


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        value = self.options[int(rng.integers(len(self.options)))]
        return value.item() if isinstance(value, np.generic) else value

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def to_json(self) -> dict[str, Any]:
        return {"choice": list(self.options)}


@dataclass(frozen=True)
class Fixed:
    """A hyperparameter held at one value (not searched)."""

    value: Any

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def suggest(self, trial: Any, name: str) -> Any:
        return self.value

    def to_json(self) -> Any:
        return self.value


_RANGES: dict[str, type] = {
    "log_uniform": LogUniform,
    "uniform": Uniform,
    "one_minus_log_uniform": OneMinusLogUniform,
    "log_uniform_or_zero": LogUniformOrZero,
}
DISTRIBUTIONS = (*_RANGES, "choice")
"""The names a declared space (study file, `search_space` attribute) may use for a hyperparameter."""


def parse_param(name: str, declared: Any) -> Param:
    """A hyperparameter's distribution from its declaration: a Param object, a plain value (held fixed), or
    one of ``{"log_uniform": [low, high]}``, ``{"uniform": [low, high]}``, ``{"one_minus_log_uniform":
    [low, high]}``, ``{"log_uniform_or_zero": [low, high]}`` (optionally ``[low, high, p_zero]``),
    ``{"choice": [a, b, ...]}``."""
    if hasattr(declared, "sample") and hasattr(declared, "suggest"):
        return declared  # type: ignore[no-any-return]
    if not isinstance(declared, dict):
        if isinstance(declared, (bool, int, float, str)):
            return Fixed(declared)
        raise OptsweepError(f"search space for {name!r}: {declared!r} is not a value or a distribution")
    if len(declared) != 1:
        raise OptsweepError(
            f"search space for {name!r}: {declared!r} must name exactly one of {', '.join(DISTRIBUTIONS)}"
        )
    kind, values = next(iter(declared.items()))
    if kind == "choice":
        if not isinstance(values, (list, tuple)) or not values:
            raise OptsweepError(f"search space for {name!r}: choice needs a non-empty list, got {values!r}")
        return Choice(tuple(values))
    if kind not in _RANGES:
        raise OptsweepError(
            f"search space for {name!r}: unknown distribution {kind!r}; valid: {', '.join(DISTRIBUTIONS)}"
        )
    sizes = (2, 3) if kind == "log_uniform_or_zero" else (2,)
    if (
        not isinstance(values, (list, tuple))
        or len(values) not in sizes
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)
    ):
        raise OptsweepError(f"search space for {name!r}: {kind} needs [low, high] numbers, got {values!r}")
    low, high = float(values[0]), float(values[1])
    positive = kind in ("log_uniform", "log_uniform_or_zero")
    unit = kind == "one_minus_log_uniform"
    if not (math.isfinite(low) and math.isfinite(high) and low <= high) or (positive and low <= 0):
        raise OptsweepError(
            f"search space for {name!r}: {kind} [{low:g}, {high:g}] is invalid: need finite low <= high"
            + (", low > 0" if positive else "")
        )
    if unit and not 0 <= low <= high < 1:
        raise OptsweepError(f"search space for {name!r}: {kind} [{low:g}, {high:g}] must lie in [0, 1)")
    return _RANGES[kind](low, high, *values[2:])  # type: ignore[no-any-return]


def parse_space(declared: dict[str, Any]) -> dict[str, Param]:
    """A whole declared space (hyperparameter -> declaration, see `parse_param`)."""
    if not isinstance(declared, dict) or not declared:
        raise OptsweepError(
            f"a search space must map hyperparameter names to distributions, got {declared!r}"
        )
    return {str(name): parse_param(str(name), value) for name, value in declared.items()}


def space_to_json(params: dict[str, Param]) -> dict[str, Any]:
    """The plain-data form of a space (what a study records and a study file holds)."""
    return {name: param.to_json() for name, param in params.items()}  # type: ignore[attr-defined]


def _declared_spaces() -> dict[str, dict[str, Param]]:
    """Every registered optimizer's space, as its class declares it (`search_space`, plain data): an
    optimizer and the space it is tuned in are defined in one place, its module."""
    found = {}
    for name in optimizers.names():
        declared = getattr(optimizers.optimizer_class(name), "search_space", None)
        if declared is None:
            raise TypeError(f"optimizer {name!r} declares no search_space; every registered one needs it")
        found[name] = parse_space(declared)
    return found


@dataclass(frozen=True)
class SearchSpace:
    """The space of one optimizer: its nuisance hyperparameters and the LR schedule."""

    optimizer: str
    params: dict[str, Param]

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {name: param.sample(rng) for name, param in self.params.items()}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run: suggest every hyperparameter, return the derived values."""
        return {name: param.suggest(trial, name) for name, param in self.params.items()}

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the space's values, in a fixed order (`search="grid"`): each
        hyperparameter must be a `Choice` or a fixed value."""
        axes: list[tuple[Any, ...]] = []
        for name, param in self.params.items():
            if isinstance(param, Choice):
                axes.append(param.options)
            elif isinstance(param, Fixed):
                axes.append((param.value,))
            else:
                declared = param.to_json()  # type: ignore[attr-defined]
                raise OptsweepError(
                    "a grid search needs every hyperparameter as a choice or a fixed value; "
                    f"{self.optimizer}'s {name} is {declared}"
                )
        return [dict(zip(self.params, values, strict=True)) for values in itertools.product(*axes)]


def default_params(optimizer: str) -> dict[str, Param]:
    """The hyperparameter space of a built-in optimizer (see SPACES)."""
    optimizers.optimizer_class(optimizer)  # a clear error for an unknown name
    return dict(SPACES[optimizer])


def space_for(
    optimizer: str,
    *,
    lr_range: tuple[float, float] | None = None,
    schedules: tuple[str, ...] = SCHEDULES,
    params: dict[str, Param] | None = None,
) -> SearchSpace:
    """The search space of `optimizer` (a label): `params` (default: the built-in optimizer's space),
    with the LR range overridden if given, and the schedule choice."""
    params = dict(params) if params is not None else default_params(optimizer)
    if lr_range is not None and "lr" in params:
        params["lr"] = replace(params["lr"], low=lr_range[0], high=lr_range[1])  # type: ignore[type-var]
    params["schedule"] = Choice(tuple(schedules))
    return SearchSpace(optimizer, params)


def configurations(space: SearchSpace, *, search: str, n: int, seed: int) -> list[dict[str, Any]]:
    """The configurations a study trains: the whole grid (`search="grid"`), else `n` random draws."""
    return space.grid() if search == "grid" else sample_configurations(space, n, seed)


def sample_configurations(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` configurations drawn independently of the other optimizers' draws (seeded by name)."""
    rng = np.random.default_rng([seed, zlib.crc32(space.optimizer.encode())])
    return [space.sample(rng) for _ in range(n)]


SPACES: dict[str, dict[str, Param]] = _declared_spaces()
"""The built-in optimizers' spaces, by name (read from the classes)."""
