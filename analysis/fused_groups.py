"""A fused group's Tune trial read back as its members: one trial per member, as if each had run alone.

A fused group (`trainables.fused_trial`) is one Tune trial whose config lists its members under
`__members` and whose every result carries the members that trained that epoch under `members`. Each
member becomes a trial of its own here, with the config an unfused trial of it would have had, its own
per-epoch results (under the same keys) and a Tune status of its own: the group's, except that a member
the group went on without (its configuration was stopped early) is terminated.

Time: a group's epochs are shared by the members that trained in them, so each member is charged its
share (the epoch's wall time divided by the members in it); the members' times add up to the group's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optsweep.analysis.tune_files import RawTrial
from optsweep.vocabulary import EPOCH, MEMBER_RESULTS, MEMBERS_KEY, member_configs

TIME_TOTAL = "time_total_s"


def expand(trial: RawTrial) -> list[RawTrial]:
    """The members of a fused group's trial; any other trial as it is."""
    members = trial.config.get(MEMBERS_KEY)
    if not isinstance(members, list):
        return [trial]
    configs = member_configs(trial.config)
    rows: list[list[dict[str, Any]]] = [[] for _ in members]
    spent = [0.0] * len(members)
    previous_total = 0.0
    last_epoch = 0
    for result in trial.results:
        reported = result.get(MEMBER_RESULTS)
        if not isinstance(reported, dict) or not reported:
            continue
        total = result.get(TIME_TOTAL)
        elapsed = max(0.0, float(total) - previous_total) if isinstance(total, int | float) else 0.0
        previous_total = float(total) if isinstance(total, int | float) else previous_total
        share = elapsed / len(reported)
        last_epoch = max(last_epoch, _int(result.get(EPOCH)))
        for key, metrics in reported.items():
            index = _int(key)
            if not 0 <= index < len(members) or not isinstance(metrics, dict):
                continue
            spent[index] += share
            rows[index].append(
                {
                    **metrics,
                    TIME_TOTAL: spent[index],
                    "timestamp": result.get("timestamp"),
                    "done": bool(result.get("done")),
                }
            )
    expanded = []
    for index, config in enumerate(configs):
        results = rows[index]
        left_early = bool(results) and _int(results[-1].get(EPOCH)) < last_epoch
        expanded.append(
            dataclasses.replace(
                trial,
                trial_id=f"{trial.trial_id}-{index:03d}",
                tune_status="TERMINATED" if left_early else trial.tune_status,
                config=config,
                results=results,
            )
        )
    return expanded


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
