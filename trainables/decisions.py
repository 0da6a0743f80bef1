"""Scheduler decisions for multi-worker trials, delivered to the training loop instead of enforced by
killing the trial.

Why: on Ray 2.60, when Tune stops a trial whose function runs a multi-worker `TorchTrainer`, the Train
controller dies without shutting its worker group down, and the Train placement group is left to a
detached `PlacementGroupCleaner`, which learns that the controller died through the State API. That API
is served by the dashboard, which `ray[train,tune]` does not install, so the cleaner retries forever ("Failed
to query Ray Train Controller actor state"), the placement group stays reserved and the next trial's workers
never start (ray-project/ray#54305 reports the same hang). So for these trials the sweep's scheduler records
its decision here instead of stopping the trial (`sweeps.early_stopping.scheduling`), and the loop, which
waits for the decision on each epoch it reports, ends the run itself: a run that ends by itself releases its
placement group.

The channel is a small named actor owned by the sweep driver, named after the experiment (so a resumed
sweep's new driver recreates it under the name the restored trials know); each decision is (epoch, stop).
"""

from __future__ import annotations

import sys
import time
import zlib

import ray

NAMESPACE = "optsweep"
WAIT_TIMEOUT_S = 60.0
_POLL_S = 0.02


@ray.remote(num_cpus=0)
class SchedulerDecisions:
    def __init__(self) -> None:
        self._decisions: dict[str, tuple[int, bool]] = {}

    def record(self, trial_id: str, epoch: int, stop: bool) -> None:
        previous = self._decisions.get(trial_id)
        self._decisions[trial_id] = (epoch, stop or (previous is not None and previous[1]))

    def get(self, trial_id: str) -> tuple[int, bool] | None:
        return self._decisions.get(trial_id)


def channel_name(experiment: str) -> str:
    """The channel of the sweep whose experiment directory (or URI) is `experiment`."""
    return f"scheduler-decisions-{zlib.crc32(experiment.encode()):08x}"


_held: dict[str, ray.actor.ActorHandle] = {}


def create(name: str) -> ray.actor.ActorHandle:
    """The driver's channel `name` (created on the first call, found again on later ones). The driver
    holds a handle for as long as it lives: Ray collects a named actor once no handle to it is left."""
    if name not in _held:
        _held[name] = SchedulerDecisions.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote()
    return _held[name]


def _channel(name: str) -> ray.actor.ActorHandle | None:
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def wait_for_stop_decision(
    channel_name: str, trial_id: str, epoch: int, timeout_s: float = WAIT_TIMEOUT_S
) -> bool:
    """Whether the scheduler stopped `trial_id` after `epoch`; False if no decision arrives within
    `timeout_s` (the run then goes on and asks again after the next epoch)."""
    channel = _channel(channel_name)
    if channel is None:
        raise RuntimeError(
            f"trial {trial_id} waits for scheduler decisions, but the sweep driver's channel "
            f"{channel_name!r} does not exist (the sweep creates it with trainables.decisions.create)"
        )
    deadline = time.monotonic() + timeout_s
    while True:
        decision = ray.get(channel.get.remote(trial_id))
        if decision is not None and decision[0] >= epoch:
            return decision[1]
        if time.monotonic() > deadline:
            print(
                f"optsweep: no scheduler decision for trial {trial_id} epoch {epoch} "
                f"after {timeout_s:.0f} s; continuing",
                file=sys.stderr,
                flush=True,
            )
            return False
        time.sleep(_POLL_S)
