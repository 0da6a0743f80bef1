"""A fused group as one Tune trial: the members of one optimizer's study trained at once (`FusedGroup`).

The trial config holds what an unfused trial's holds (`optimizer`, `settings`) and, instead of one
configuration and seed, its members under `__members` (each: the hyperparameters, `seed` and
`__configuration` an unfused trial would have at its top level). Every epoch the group reports one result
and a checkpoint of the whole group; the result carries every member that trained that epoch under
`members` (member number -> its metrics, under the keys of an unfused trial's result), which the analysis
expands into one trial per member. The top-level metrics are the best member's (for Tune's own use),
with the epoch and the node the group runs on.

Early stopping is decided per configuration by the sweep's scheduler (`sweeps.early_stopping.halving`) from
the members' results. The group learns the decisions through `decisions` (given by the sweep: see
`MemberDecisions`) after each report and when it resumes, and the members of eliminated configurations leave
the group, so its compute shrinks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any, Protocol

from optsweep import vocabulary as v

from . import checkpoints, faults, sessions
from .config import TrainConfig
from .fused import FusedGroup
from .tasks import Task, build_task


class MemberDecisions(Protocol):
    """The scheduler's decisions, as the sweep hands them to a fused trial."""

    def eliminated(self, optimizer: str, epoch: int) -> set[int]:
        """The configurations of `optimizer` eliminated at the rungs up to `epoch` that are decided."""
        ...


def is_fused(config: dict[str, Any]) -> bool:
    """Whether a Tune trial config is a fused group's."""
    return v.MEMBERS_KEY in config


def check_fused_trial_config(config: dict[str, Any]) -> None:
    """Refuse a fused trial config without members or whose members lack what a study always sets."""
    members = config.get(v.MEMBERS_KEY)
    if not isinstance(members, list) or not members:
        raise ValueError(
            f"fused trial config has no members under {v.MEMBERS_KEY!r}: the experiment is damaged"
        )
    for index, member in enumerate(members):
        missing = [key for key in ("lr", "seed", v.CONFIGURATION_KEY) if key not in member]
        if missing:
            raise ValueError(
                f"fused trial config's member {index} lacks {', '.join(missing)}: the experiment is damaged"
            )


def run_fused_trial(
    config: dict[str, Any],
    task: Task | None = None,
    run_settings: dict[str, Any] | None = None,
    decisions: MemberDecisions | None = None,
    session: Any = None,
) -> None:
    """Train a fused group to its end (or until every member diverged or was eliminated), resuming from
    the trial's checkpoint. `session` defaults to the Tune trial's (`sessions.TuneSession`)."""
    check_fused_trial_config(config)
    if run_settings:
        config = {**config, "settings": {**config["settings"], **run_settings}}
    members = v.member_configs(config)
    configs = [TrainConfig.from_trial_config(member) for member in members]
    configurations = [int(member[v.CONFIGURATION_KEY]) for member in members]
    if task is None:
        task = build_task(configs[0].task, configs[0].task_args, data_dir=configs[0].data_dir)
    session = session if session is not None else sessions.TuneSession()
    group = FusedGroup(configs, task, device=session.device, node_id=session.node_id)
    found = session.latest_checkpoint()
    note: dict[str, Any] = {}
    if found.state is not None:
        group.load_state_dict(found.state)
    if found.state is not None or found.unusable:
        note = {v.RESUMED_FROM_EPOCH: group.epoch, v.UNUSABLE_CHECKPOINTS: len(found.unusable)}
    optimizer = str(config["optimizer"])
    _drop_eliminated(group, optimizer, configurations, decisions)
    target = task.target
    while not group.finished:
        faults.maybe_crash(0, group.epoch + 1)  # the fault-tolerance tests' kill, before the epoch trains
        reports = group.run_epoch()
        result = {**_group_result(reports, target, note), v.NODE_ID: session.node_id}
        note = {}
        with tempfile.TemporaryDirectory(prefix="optsweep-ckpt-") as directory:
            checkpoints.save(directory, group.state_dict(), 0, durable=False)  # a staging copy
            session.report(result, directory)
        _drop_eliminated(group, optimizer, configurations, decisions)


def _drop_eliminated(
    group: FusedGroup, optimizer: str, configurations: Sequence[int], decisions: MemberDecisions | None
) -> None:
    if decisions is None or group.finished:
        return
    eliminated = decisions.eliminated(optimizer, group.epoch)
    leaving = [k for k in group.active() if configurations[k] in eliminated]
    if leaving:
        group.drop(leaving)


def _group_result(
    reports: dict[int, dict[str, Any]], target: v.Target, note: dict[str, Any]
) -> dict[str, Any]:
    """The epoch's result: the members' metrics (each with the resume note an unfused trial would carry)
    and, at the top level, the epoch and the best member's target values."""
    members = {str(k): {**metrics, **note} for k, metrics in sorted(reports.items())}
    epoch = max(int(m[v.EPOCH]) for m in reports.values())
    scores = [float(m[target.key]) for m in reports.values() if not m.get(v.DIVERGED_FLAG)]
    bests = [float(m[target.best_key]) for m in reports.values()]
    pick = max if target.mode == "max" else min
    return {
        v.EPOCH: epoch,
        target.key: pick(scores) if scores else target.worst,
        target.best_key: pick(bests) if bests else target.worst,
        v.DIVERGED_FLAG: not scores,
        v.MEMBER_RESULTS: members,
        **note,
    }
