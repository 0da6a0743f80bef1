"""What is trained, as types: a `Task` bundles the model, the data, the loss, the metrics, the target
metric with its mode, the default budget and the weight-decay rule; `TaskData` holds its splits and
`Metric` (`ACCURACY`, `MSE`, `MAE`, `PERPLEXITY`) its metrics.

A leaf module: the built-in tasks, the training loop and the sweeps import it, it imports none of them,
and not torch either (torch is imported where a task is built or run), so that `optsweep.Task` and the
command line's names cost no torch import. Users import these names from `optsweep`
(`optsweep.trainables.tasks` re-exports them with the code that builds and checks tasks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from optsweep.errors import OptsweepError
from optsweep.vocabulary import DEFAULT_TARGET, Target

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Dataset

LOSS_METRIC = "loss"
"""Every task reports its loss on the validation and test splits (`val_loss`); a target may use it."""

WEIGHT_DECAY_RULES = {
    "all": "weight decay on every parameter",
    "matrices_only": "no weight decay on biases and normalisation weights (parameters with < 2 dims)",
}


class TaskError(OptsweepError):
    """A task that cannot be built or does not fit together; the message is one line for the user."""


@dataclass(frozen=True)
class TaskData:
    """The splits of a task: map-style datasets whose items are (inputs, target) pairs.

    `test` may be None; then no test metrics are reported. In-memory `TensorDataset`s take the
    fast batching path; any other dataset goes through a DataLoader.
    """

    train: Dataset
    val: Dataset
    test: Dataset | None = None


@dataclass(frozen=True)
class Metric:
    """A metric as the mean of per-element values over a whole split (exact across batches and
    data-parallel ranks); `finish` maps that mean to the value reported (e.g. exp for perplexity)."""

    values: Callable[[Tensor, Tensor], Tensor]
    finish: Callable[[float], float] | None = None

    def report(self, mean: float) -> float:
        return self.finish(mean) if self.finish is not None else mean


def _correct(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.argmax(dim=-1) == targets).float()


def _squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.reshape(targets.shape).float() - targets.float()) ** 2


def _absolute_error(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.reshape(targets.shape).float() - targets.float()).abs()


def _token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
    )


def _safe_exp(mean: float) -> float:
    return math.exp(min(mean, 700.0))  # a diverging model must not raise OverflowError


ACCURACY = Metric(_correct)
"""Fraction of examples whose largest output is the label (classification; also per token)."""
MSE = Metric(_squared_error)
"""Mean squared error (regression)."""
MAE = Metric(_absolute_error)
"""Mean absolute error (regression)."""
PERPLEXITY = Metric(_token_cross_entropy, finish=_safe_exp)
"""exp(mean per-token cross-entropy) of logits (..., vocab) against token ids (...)."""


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over every token: the loss of a language model with logits (B, T, V)."""
    return _token_cross_entropy(logits, targets).mean()


@dataclass(frozen=True)
class Task:
    """What is trained (an example: `optsweep.trainables.tasks`). Fields:

    - `name`: recorded with the results.
    - `model`: builds a fresh model (called after seeding).
    - `data`: builds the splits (`TaskData`).
    - `loss(outputs, targets)`: the mean training loss of a batch; None (the default): cross-entropy
      (`torch.nn.functional.cross_entropy`).
    - `metrics`: name -> `Metric`, reported as ``val_<name>`` and ``test_<name>`` every epoch
      (``loss`` is always reported).
    - `target`: the metric the study optimises and its mode, e.g. ``Target("acc", "max")``.
    - `batch_size`, `max_epochs`: defaults a study may override.
    - `weight_decay`: which parameters get weight decay, a key of `WEIGHT_DECAY_RULES`.
    - `divergence_loss`: a training loss above it ends a run as diverged (a non-finite one always
      does); None: only non-finite losses.
    """

    name: str
    model: Callable[[], nn.Module]
    data: Callable[[], TaskData]
    loss: Callable[[Tensor, Tensor], Tensor] = None  # type: ignore[assignment]  # set in __post_init__
    metrics: Mapping[str, Metric] = field(default_factory=lambda: {"acc": ACCURACY})
    target: Target = DEFAULT_TARGET
    batch_size: int = 64
    max_epochs: int = 20
    weight_decay: str = "all"
    divergence_loss: float | None = None

    def __post_init__(self) -> None:
        if self.loss is None:
            # Resolved here, not as the field's default, so that the type imports without torch.
            import torch.nn.functional as F

            object.__setattr__(self, "loss", F.cross_entropy)
        if not isinstance(self.name, str) or not self.name.strip():
            raise TaskError(f"task name {self.name!r} is invalid: give a non-empty string")
        for attribute in ("model", "data", "loss"):
            if not callable(getattr(self, attribute)):
                raise TaskError(
                    f"task {self.name!r}: {attribute} must be callable, got {getattr(self, attribute)!r}"
                )
        if not isinstance(self.target, Target):
            raise TaskError(
                f"task {self.name!r}: target must be an optsweep Target (e.g. Target('acc', 'max')), "
                f"got {self.target!r}"
            )
        for metric_name, metric in self.metrics.items():
            if metric_name == LOSS_METRIC:
                raise TaskError(
                    f"task {self.name!r}: the metric name 'loss' is reserved (the loss is always reported)"
                )
            if not isinstance(metric, Metric):
                raise TaskError(
                    f"task {self.name!r}: metric {metric_name!r} must be an optsweep Metric, got {metric!r}"
                )
        if self.target.metric not in self.metric_names:
            raise TaskError(
                f"task {self.name!r} does not report the target metric {self.target.metric!r}; "
                f"it reports: {', '.join(self.metric_names)}"
            )
        for attribute in ("batch_size", "max_epochs"):
            value = getattr(self, attribute)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TaskError(
                    f"task {self.name!r}: {attribute} {value!r} is invalid: it must be an integer >= 1"
                )
        if self.weight_decay not in WEIGHT_DECAY_RULES:
            raise TaskError(
                f"task {self.name!r}: weight_decay rule {self.weight_decay!r} is unknown; "
                f"valid: {', '.join(WEIGHT_DECAY_RULES)}"
            )
        if self.divergence_loss is not None and not self.divergence_loss > 0:
            raise TaskError(
                f"task {self.name!r}: divergence_loss {self.divergence_loss!r} must be > 0 or None"
            )
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric reported per split, the loss first."""
        return (LOSS_METRIC, *self.metrics)

    def describe(self) -> dict[str, Any]:
        """A JSON-able record of the task, written with the study."""
        return {
            "name": self.name,
            "target": self.target.to_json(),
            "metrics": list(self.metric_names),
            "loss": _callable_name(self.loss),
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "weight_decay": self.weight_decay,
            "weight_decay_rule": WEIGHT_DECAY_RULES[self.weight_decay],
            "divergence_loss": self.divergence_loss,
        }


def param_groups(model: nn.Module, rule: str) -> list[dict[str, Any]]:
    """The model's parameters as optimizer param groups under weight-decay `rule`: one group, or a group
    with the optimizer's weight decay and one with none (biases and normalisation weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if rule == "all":
        return [{"params": params}]
    if rule != "matrices_only":
        raise TaskError(f"weight_decay rule {rule!r} is unknown; valid: {', '.join(WEIGHT_DECAY_RULES)}")
    decayed = [p for p in params if p.ndim >= 2]
    plain = [p for p in params if p.ndim < 2]
    groups: list[dict[str, Any]] = []
    if decayed:
        groups.append({"params": decayed})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


def _callable_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}.{name}" if module else name
