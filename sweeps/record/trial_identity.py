"""Who a running trial is: its optimizer, seed, hyperparameters and configuration id, as the report
names them, so that a tracking UI or the progress line can group the seeds of a configuration.

Configuration ids follow the report's rule (analysis.loading): `vocabulary.config_id` of the trial's
configuration number (`__configuration`), so the same configuration has the same id fused or not. A trial
without one (written by other code) is numbered in the order of first trial ids, as the report does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from optsweep.analysis.loading import hyperparameters
from optsweep.vocabulary import CONFIGURATION_KEY, SEARCH, STAGE_KEY, config_id


@dataclass(frozen=True)
class TrialIdentity:
    trial_id: str
    optimizer: str
    seed: int | None
    config_id: str
    hyperparameters: dict[str, Any]
    stage: str = SEARCH  # or CONFIRM: a confirmation trial of the configuration the search chose

    @property
    def run_name(self) -> str:
        """A readable run name: the configuration and the seed, e.g. ``adam-c03-seed1``."""
        return f"{self.config_id}-seed{self.seed}" if self.seed is not None else self.config_id

    def tags(self) -> dict[str, str]:
        """The identity as string tags (MLflow tags, TensorBoard hparams, W&B config)."""
        return {
            "optimizer": self.optimizer,
            "config_id": self.config_id,
            "seed": "" if self.seed is None else str(self.seed),
            "trial_id": self.trial_id,
            "stage": self.stage,
        }

    def short_hyperparameters(self, limit: int = 4) -> str:
        """The first few hyperparameters, compactly: ``lr=0.0031, weight_decay=0, schedule=cosine``."""
        items = list(self.hyperparameters.items())[:limit]
        return ", ".join(f"{key}={_short(value)}" for key, value in items)


class ConfigurationIds:
    """Numbers configurations as trials appear; one instance per optimizer's Tune experiment."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._by_trial: dict[str, TrialIdentity] = {}
        self._count: dict[str, int] = {}

    def update(self, trials: Iterable[Any]) -> None:
        """Register trials not seen yet, in trial-id order (Tune passes every trial it knows)."""
        for trial in sorted(trials, key=lambda t: t.trial_id):
            if trial.trial_id not in self._by_trial:
                self._register(trial)

    def of(self, trial: Any) -> TrialIdentity:
        if trial.trial_id not in self._by_trial:
            self._register(trial)
        return self._by_trial[trial.trial_id]

    def _register(self, trial: Any) -> None:
        config = dict(trial.config)
        optimizer = str(config.get("optimizer", ""))
        hparams = hyperparameters(config)
        key = (optimizer, json.dumps(hparams, sort_keys=True, default=str))
        number = config.get(CONFIGURATION_KEY)
        if key not in self._by_key:
            self._count[optimizer] = self._count.get(optimizer, 0) + 1
            self._by_key[key] = config_id(optimizer, self._count[optimizer] - 1)
        numbered = isinstance(number, int) and not isinstance(number, bool)
        # Random search sets `seed`; Optuna's Repeater numbers the seeds of a configuration instead.
        seed = config.get("seed", config.get("__trial_index__"))
        self._by_trial[trial.trial_id] = TrialIdentity(
            trial_id=trial.trial_id,
            optimizer=optimizer,
            seed=int(seed) if isinstance(seed, int) else None,
            config_id=config_id(optimizer, number) if numbered else self._by_key[key],
            hyperparameters=hparams,
            stage=str(config.get(STAGE_KEY, SEARCH)),
        )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
