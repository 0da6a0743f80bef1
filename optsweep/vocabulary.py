"""The names every layer shares, defined once: trial statuses, per-epoch result keys, the target metric.

The training loop writes these names, the sweeps schedule on them, the analysis reads them back and
the test fixtures build experiments with them. Pure Python (no torch, no Ray), so the analysis can use
it on a machine that has neither.

Metric naming: a task reports metrics by a base name (``acc``, ``mse``, ``perplexity``); each is
reported per epoch on the validation split as ``val_<name>`` and on the test split as ``test_<name>``.
The task's target metric is one validation metric with a mode (``max`` or ``min``); the loop also
reports the best value so far as ``best_val_<name>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------------------- statuses
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"
DIVERGED = "diverged"
ERROR = "error"
INCOMPLETE = "incomplete"
STATUSES = (COMPLETED, STOPPED_EARLY, DIVERGED, ERROR, INCOMPLETE)
FINISHED = (COMPLETED, STOPPED_EARLY)
"""Statuses whose metrics are valid measurements."""

# ------------------------------------------------------------------------ per-epoch result keys
EPOCH = "epoch"
LR = "lr"
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
TEST_LOSS = "test_loss"
EPOCH_TIME_S = "epoch_time_s"
SAMPLES_PER_S = "samples_per_s"
NODE_ID = "node_id"
DIVERGED_FLAG = "diverged"
RESUMED_FROM_EPOCH = "resumed_from_epoch"
UNUSABLE_CHECKPOINTS = "unusable_checkpoints"

VAL_PREFIX = "val_"
TEST_PREFIX = "test_"
BEST_PREFIX = "best_"
FINAL_PREFIX = "final_"

DIVERGED_VALUE = 1e9
"""Finite stand-in for a diverged run's losses and min-metrics (Tune's schedulers break on NaN)."""
DIVERGED_REASON = "diverged_reason"
"""In the result of a diverged epoch: why, e.g. ``val_loss is nan at epoch 3``."""


def is_measurement(value: Any) -> bool:
    """Whether a reported value is a real measurement: a finite number that is not the diverged sentinel."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < DIVERGED_VALUE
    )


MODES = ("max", "min")


def val_key(metric: str) -> str:
    return VAL_PREFIX + metric


def test_key(metric: str) -> str:
    return TEST_PREFIX + metric


# ----------------------------------------------------------------------------------- the target
@dataclass(frozen=True)
class Target:
    """The metric a study optimises: a task metric's base name and whether higher is better.

    ``Target("acc", "max")`` is validation accuracy; ``Target("perplexity", "min")`` validation
    perplexity. Its column names are the ones the loop reports and the analysis reads.
    """

    metric: str = "acc"
    mode: str = "max"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"invalid target mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if not self.metric or not self.metric.replace("_", "").isalnum():
            raise ValueError(
                f"invalid target metric name {self.metric!r}: use letters, digits and '_' (e.g. 'acc')"
            )

    @property
    def key(self) -> str:
        """The per-epoch result key schedulers and searchers read, e.g. ``val_acc``."""
        return val_key(self.metric)

    @property
    def best_key(self) -> str:
        """Best-so-far per epoch and a trial's best in the trials table, e.g. ``best_val_acc``."""
        return BEST_PREFIX + self.key

    @property
    def final_key(self) -> str:
        """The value at a trial's last epoch in the trials table, e.g. ``final_val_acc``."""
        return FINAL_PREFIX + self.key

    @property
    def test_key(self) -> str:
        """The same metric on the test split, e.g. ``test_acc``."""
        return test_key(self.metric)

    @property
    def label(self) -> str:
        """For axes and tables: ``val acc (higher is better)``."""
        return (
            f"val {self.metric.replace('_', ' ')} ({'higher' if self.mode == 'max' else 'lower'} is better)"
        )

    @property
    def worst(self) -> float:
        """A finite value no real measurement beats: a diverged run's sentinel."""
        return -DIVERGED_VALUE if self.mode == "max" else DIVERGED_VALUE

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b` (NaN is never better)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.mode == "max" else a < b

    def best_of(self, values: Any) -> float:
        """The best finite value of an iterable, or NaN if there is none."""
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not finite:
            return math.nan
        return max(finite) if self.mode == "max" else min(finite)

    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is: ``sign * value`` is always to be maximised."""
        return 1 if self.mode == "max" else -1

    def to_json(self) -> dict[str, str]:
        return {"metric": self.metric, "mode": self.mode}

    @classmethod
    def from_json(cls, data: Any) -> Target:
        """From a study record; experiments written before targets existed optimised val_acc (max)."""
        if not data:
            return DEFAULT_TARGET
        return cls(str(data["metric"]), str(data["mode"]))


DEFAULT_TARGET = Target("acc", "max")
"""Validation accuracy: the target of every classification task and of experiments from before tasks."""

TARGET_RECORD_KEY = "target"
"""Key of the target in an experiment's study record (study.json)."""

STUDY_FILE = "study.json"
STUDY_YAML = "study.yaml"
"""The resolved study as a study file, beside the record: `optsweep run <it>` reruns the study."""
STUDY_BUDGET_FIELDS = (
    "num_samples",
    "seeds",
    "max_epochs",
    "batch_size",
    "schedules",
    "lr_min",
    "lr_max",
    "scheduler",
    "search",
    "search_seed",
    "workers_per_trial",
    "mode",
    "staleness_aware_lr",
    "confirm_seeds",
)
"""The study record's keys that are also command-line flags (`--num-samples`, ...): how the budget was
spent. With the task and the optimizers they are a study's identity."""
"""The study record's file name, directly inside the experiment directory."""


def test_mean_key(target: Target) -> str:
    """The analysis summary's column of the chosen configuration's mean test metric, e.g. test_acc_mean."""
    return target.test_key + "_mean"


# -------------------------------------------------------------------------------------- stages
SEARCH = "search"
CONFIRM = "confirm"
STAGES = (SEARCH, CONFIRM)
"""A study's two stages: the search tunes each optimizer (configurations x search seeds, early stopping)
and chooses its configuration; the confirmation retrains the chosen configuration on fresh seeds, to the
full budget, and is what the headline table, intervals and verdict report."""
STAGE_KEY = "__stage"
"""In a trial config (or a fused member's): the stage the trial belongs to; absent means `search` (every
experiment written before the confirmation stage existed)."""
STAGE_COLUMN = "stage"
"""The trials table's column of each trial's stage."""
CONFIRM_SEED_BASE = 10_000
"""The confirmation stage's seeds are CONFIRM_SEED_BASE + i, i = 0..n-1: disjoint from the search's seeds
(0..seeds-1, at most CONFIRM_SEED_BASE of them), and the same whatever the seed counts: the i-th
confirmation seed of every study is the same seed."""


# ---------------------------------------------------------------------------------- fused trials
CONFIGURATION_KEY = "__configuration"
"""In a trial config (or a fused member's): the configuration's number within its optimizer's study; all
seeds of a configuration share it and its hyperparameters."""


def config_id(optimizer: str, configuration: int) -> str:
    """A configuration's id in reports, progress lines and tracking runs, from its number in its optimizer's
    search: ``adam-c03`` for number 2, whether its seeds ran fused or not."""
    return f"{optimizer}-c{configuration + 1:02d}"


MEMBERS_KEY = "__members"
"""In a fused group's trial config: its members, each a dict of the hyperparameters, `seed` and
`__configuration` that an unfused trial's config holds at its top level."""
MEMBER_RESULTS = "members"
"""In a fused group's per-epoch result: member number (a string, as JSON keys are) -> that member's
metrics under the keys of an unfused trial's result."""


def member_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """A fused group's trial config as its members' own: each member's hyperparameters, seed and
    configuration over the group's shared keys (what an unfused trial of it would have had); a damaged
    member (not a dict) gets the shared keys only. Empty for any other config."""
    members = config.get(MEMBERS_KEY)
    if not isinstance(members, list):
        return []
    shared = {key: value for key, value in config.items() if key != MEMBERS_KEY}
    return [{**shared, **(member if isinstance(member, dict) else {})} for member in members]


def member_results(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A fused group's result's members: member number -> its metrics (empty for any other result). Tune
    hands schedulers and callbacks results flattened (``members/3/val_acc``); result.json is nested."""
    nested = result.get(MEMBER_RESULTS)
    if isinstance(nested, dict):
        return {int(k): dict(v) for k, v in nested.items() if isinstance(v, dict)}
    prefix = MEMBER_RESULTS + "/"
    members: dict[int, dict[str, Any]] = {}
    for key, value in result.items():
        if key.startswith(prefix):
            member, _, name = key[len(prefix) :].partition("/")
            if member.isdigit() and name:
                members.setdefault(int(member), {})[name] = value
    return members


# ------------------------------------------------ parameter-server runs and the sync-vs-async comparison
# The asynchronous parameter server (trainables/param_server.py) reports these per epoch, and the
# sync-vs-async runner (sweeps/sync_vs_async.py) and its report (analysis/sync_vs_async.py) read them.
UPDATES = "updates"
"""Optimizer updates applied so far (per epoch); in the comparison's tables, for either mode."""
STALENESS_MEAN = "staleness_mean"
STALENESS_P50 = "staleness_p50"
STALENESS_P90 = "staleness_p90"
STALENESS_MAX = "staleness_max"
"""Staleness of the gradients applied: how many updates the server applied since the worker pulled."""
STALENESS_COUNTS = "staleness_counts"
"""In an async-ps checkpoint: gradients applied at each staleness 0, 1, 2, ... (a histogram)."""
TRAIN_TIME_S = "train_time_s"
"""Cumulative training time (the sum of the epochs' times: no start-up, no evaluation)."""
RUN_COLUMN = "run"
"""The comparison's run label: the mode, with ``-straggler`` when a straggler was injected."""
MODE_COLUMN = "mode"
"""A run's training mode (``sync``, ``async-ps``)."""
STRAGGLER_DELAY_S = "straggler_delay_s"
"""Seconds the last worker sleeps before each of its steps (a trial setting; 0: no straggler)."""
EPOCHS_COLUMN = "epochs"
"""In the comparison's runs table: the epochs a run trained."""


def time_to_key(target_value: float) -> str:
    """The runs table's column of the training time to reach `target_value`, e.g. ``time_to_0.9_s``."""
    return f"time_to_{target_value:g}_s"


def updates_to_key(target_value: float) -> str:
    """The runs table's column of the updates to reach `target_value`, e.g. ``updates_to_0.9``."""
    return f"updates_to_{target_value:g}"
