"""Which metric an experiment optimised, and in which direction: read from its study record once,
then carried by the tables the analysis builds (``frame.attrs["target"]``).

Every public analysis function takes an optional ``target=`` keyword; without it the target comes
from the table it was given (``load`` and ``summarize`` attach it), and a table that carries none
is an experiment from before targets existed: validation accuracy, higher is better.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd

from optsweep.analysis.stats import expected_column
from optsweep.analysis.tune_files import find_tune_experiments
from optsweep.vocabulary import (
    BEST_PREFIX,
    DEFAULT_TARGET,
    STUDY_FILE,
    TARGET_RECORD_KEY,
    TEST_PREFIX,
    VAL_PREFIX,
    Target,
    test_mean_key,
)

ATTR = "target"


def target_of(experiment_dir: str | os.PathLike[str]) -> Target:
    """The target recorded in `experiment_dir`/study.json (or, for one optimizer's Tune directory,
    in its parent's). No record, or a record without a target: `DEFAULT_TARGET` (val acc, max).
    An unreadable or invalid record also gives the default, with a warning."""
    for path in _record_paths(Path(experiment_dir)):
        return _read_target(path)
    return DEFAULT_TARGET


def search_of(experiment_dir: str | os.PathLike[str]) -> str | None:
    """The search algorithm the study record names (``random``, ``optuna``), None without one."""
    for path in _record_paths(Path(experiment_dir)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        search = record.get("search") if isinstance(record, dict) else None
        return str(search) if search is not None else None
    return None


def _record_paths(root: Path) -> list[Path]:
    candidates = [root / STUDY_FILE]
    if find_tune_experiments(root) == [root]:
        candidates.append(root.parent / STUDY_FILE)
    return [path for path in candidates if path.is_file()]


def resolve(table: pd.DataFrame, target: Target | None = None) -> Target:
    """The target to analyse `table` with: `target` if given, else the one the table carries,
    else the default. A table without a target whose columns belong to another target (a
    ``best_val_<m>``, ``test_<m>_mean`` or ``expected_min`` column, as read back from a CSV) is
    refused: its mode cannot be guessed, and reading it as accuracy would rank it upside down."""
    if target is not None:
        return target
    carried = table.attrs.get(ATTR)
    if isinstance(carried, Target):
        return carried
    foreign = [c for c in table.columns if isinstance(c, str) and _names_another_target(c)]
    if foreign:
        raise ValueError(
            f"the table has {', '.join(foreign)} but no target: pass target=Target(metric, mode) "
            "(or load it with analysis.load, which attaches the experiment's target)"
        )
    return DEFAULT_TARGET


def _names_another_target(column: str) -> bool:
    default = (DEFAULT_TARGET.best_key, test_mean_key(DEFAULT_TARGET), expected_column(DEFAULT_TARGET.mode))
    if column in default:
        return False
    per_target = column.startswith(BEST_PREFIX + VAL_PREFIX) or (
        column.startswith(TEST_PREFIX) and column.endswith(test_mean_key(DEFAULT_TARGET)[len("test_acc") :])
    )
    return per_target or column == expected_column("min")


def attach(frame: pd.DataFrame, target: Target) -> pd.DataFrame:
    """`frame` carrying `target` (in place; returned for chaining)."""
    frame.attrs[ATTR] = target
    return frame


def _read_target(path: Path) -> Target:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return Target.from_json(record.get(TARGET_RECORD_KEY))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(
            f"{path}: unreadable study record ({exc.__class__.__name__}: {exc}); "
            f"analysing it as {DEFAULT_TARGET.label}",
            stacklevel=3,
        )
        return DEFAULT_TARGET
