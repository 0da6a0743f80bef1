"""Refuse a trial whose config is not what optsweep writes: a word where a number belongs.

Tune leaves ``["__fn_ph", "<id>"]`` (its placeholder of an unresolved ``sample_from`` function) in the
config of a trial it creates after ``Tuner.restore``; counting such a trial would put a list where a
learning rate belongs, in every table and plot. One line names the trial, the key and the value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from optsweep.errors import OptsweepError
from optsweep.vocabulary import CONFIGURATION_KEY, STAGE_KEY, STAGES

NUMERIC_KEYS = ("lr", "weight_decay")
"""Hyperparameters every optimizer's config holds as numbers."""
INTEGER_KEYS = ("seed", CONFIGURATION_KEY)
TUNE_PLACEHOLDER = "__fn_ph"
_NOT_HPARAMS = {"optimizer", "settings", STAGE_KEY, *INTEGER_KEYS}


class BadConfigError(OptsweepError):
    """A trial's config holds a value optsweep never writes there (the message is one line)."""


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check(trials: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Raise BadConfigError for the first (trial id, config) whose config holds a non-number where a
    number belongs: lr, weight_decay, seed or __configuration, any hyperparameter holding Tune's
    placeholder, or a hyperparameter that is a number in another trial of the same optimizer; or an
    unknown stage."""
    trials = list(trials)
    numeric: dict[str, set[str]] = {}
    for _, config in trials:
        for key, value in config.items():
            if is_number(value) and _hyperparameter(key):
                numeric.setdefault(str(config.get("optimizer")), set()).add(key)
    for trial_id, config in trials:
        stage = config.get(STAGE_KEY)
        if stage is not None and stage not in STAGES:
            allowed = ", ".join(STAGES)
            raise BadConfigError(
                f"trial {trial_id}: config key {STAGE_KEY!r} holds {stage!r}; allowed: {allowed}"
            )
        numbers = numeric.get(str(config.get("optimizer")), set())
        for key, value in config.items():
            integer = key in INTEGER_KEYS
            if value is None or not (integer or _hyperparameter(key)):
                continue
            if integer and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                continue
            wanted = integer or key in NUMERIC_KEYS or key in numbers or _placeholder(value)
            if wanted and (integer or not is_number(value)):
                raise BadConfigError(_message(trial_id, key, value, integer))


def _hyperparameter(key: str) -> bool:
    return key not in _NOT_HPARAMS and not key.startswith("__")


def _placeholder(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and value[0] == TUNE_PLACEHOLDER


def _message(trial_id: str, key: str, value: Any, integer: bool) -> str:
    allowed = "a whole number >= 0" if integer else "a number"
    why = (
        " (Ray Tune's placeholder of an unresolved sample_from: the trial was created without its "
        "configuration)"
        if _placeholder(value)
        else ""
    )
    return f"trial {trial_id}: config key {key!r} holds {value!r}, not {allowed}{why}"
