"""A fused group's Tune trial seen by the tracking backends as its members: one run per member.

A fused group (`trainables.fused_trial`) is one Tune trial that reports all its members' metrics under
`members` every epoch. TensorBoard, MLflow and W&B (Ray's logger callbacks, `sweeps.monitoring.tracking`)
keep one run per trial object they are given, so each member is given to them as a `MemberTrial`: the group's
trial with the member's id, config (what the member would have had as an unfused trial) and its own
log directory (`member_<k>` in the group's). A member's run starts with its first result, gets its
results with the group's iteration, and ends when the group goes on without it (its configuration was
stopped early, or it diverged) or when the group ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from optsweep.vocabulary import EPOCH, MEMBERS_KEY, member_configs, member_results

_FROM_GROUP = ("training_iteration", "timestamp", "time_total_s", "date", "hostname", "node_ip", "pid")


class MemberTrial:
    """One member of a fused group's trial, standing in for the trial it would have been alone."""

    def __init__(self, group: Any, index: int) -> None:
        self._group = group
        self.index = index
        self.config: dict[str, Any] = member_configs(group.config)[index]
        self.trial_id = f"{group.trial_id}-{index:03d}"
        self.checkpoint = None  # its logs are its own: nothing to restore from the group's storage

    @property
    def local_path(self) -> str:
        return os.path.join(self._group.local_path, f"member_{self.index:03d}")

    def init_local_path(self) -> None:
        os.makedirs(self.local_path, exist_ok=True)

    @property
    def evaluated_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if k != "settings"}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)

    def __str__(self) -> str:
        return f"{self._group}-{self.index:03d}"


class MemberRuns:
    """Which members of which groups have an open run; turns a group's hooks into its members'."""

    def __init__(self) -> None:
        self._members: dict[tuple[str, int], MemberTrial] = {}
        self._open: dict[str, dict[int, MemberTrial]] = {}  # group trial id -> members with an open run

    @staticmethod
    def is_group(trial: Any) -> bool:
        return isinstance(getattr(trial, "config", None), dict) and MEMBERS_KEY in trial.config

    def member(self, group: Any, index: int) -> MemberTrial:
        key = (group.trial_id, index)
        if key not in self._members:
            self._members[key] = MemberTrial(group, index)
        return self._members[key]

    def expand(self, trials: Iterable[Any]) -> list[Any]:
        """The trials with each group replaced by all its members (for identities)."""
        expanded: list[Any] = []
        for trial in trials:
            if self.is_group(trial):
                expanded += [self.member(trial, k) for k in range(len(trial.config[MEMBERS_KEY]))]
            else:
                expanded.append(trial)
        return expanded

    def on_result(
        self, group: Any, result: dict[str, Any]
    ) -> tuple[list[MemberTrial], list[tuple[MemberTrial, dict[str, Any]]], list[MemberTrial]]:
        """(members whose run starts, (member, its result) to log, members whose run ends) for a group's
        result."""
        reported = member_results(result)
        open_ = self._open.setdefault(group.trial_id, {})
        started = [self.member(group, k) for k in sorted(reported) if k not in open_]
        for member in started:
            open_[member.index] = member
        shared = {key: result[key] for key in _FROM_GROUP if key in result}
        results = [
            (open_[k], {**metrics, **shared, "trial_id": open_[k].trial_id})
            for k, metrics in sorted(reported.items())
        ]
        epoch = result.get(EPOCH)
        ended = [m for k, m in sorted(open_.items()) if k not in reported and epoch is not None]
        for member in ended:
            del open_[member.index]
        return started, results, ended

    def on_end(self, group: Any) -> list[MemberTrial]:
        """The members whose run is still open when the group ends (all of them end)."""
        return list(self._open.pop(group.trial_id, {}).values())
