"""Will a trial ever fit? Checked before any trial starts, and watched while the sweep runs.

A trial that asks for more than any node offers waits forever: Tune keeps it pending, or (multi-worker
trials) Ray Train retries its worker group's start-up without end. So before the first trial the
study compares every trial's demand with the nodes there are and, on an autoscaling cluster, with the
node types the autoscaler may add; while the sweep runs, `WaitingForResources` says so when trials
have been waiting for minutes without any trial making progress.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from optsweep.errors import OptsweepError
from optsweep.sweeps import _ray_compat

WAIT_NOTE_ENV = "OPTSWEEP_WAIT_NOTE_S"
DEFAULT_WAIT_NOTE_S = 180.0
RESOURCES = ("CPU", "GPU")


class InfeasibleTrialsError(OptsweepError):
    """Trials that can never be placed; the message is one line for the user."""


@dataclass(frozen=True)
class Cluster:
    """What trials can be placed on: the alive nodes' resources and, on an autoscaling cluster, the
    node types the autoscaler may start (`max_count` -1: unbounded)."""

    nodes: Sequence[dict[str, float]]
    node_types: Sequence[tuple[dict[str, float], int]] = field(default_factory=tuple)
    local: bool = True

    @property
    def autoscaling(self) -> bool:
        return any(count != 0 for _, count in self.node_types)


def snapshot(local: bool) -> Cluster:
    """The connected Ray cluster as it is now (needs `ray.init`)."""
    import ray

    nodes = [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]
    return Cluster(nodes=nodes, node_types=_ray_compat.autoscaler_node_types(), local=local)


def worker_demand(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> list[dict[str, float]]:
    """One bundle per worker that the trial must place (a multi-worker trial's own Tune driver reserves
    no CPU or GPU, see `trainables.trial.trial_resources`)."""
    return [{"CPU": cpus_per_worker, "GPU": gpus_per_worker} for _ in range(workers)]


def _fits(bundle: dict[str, float], node: dict[str, float]) -> int:
    """How many `bundle`s fit on `node`."""
    counts = [math.floor(node.get(key, 0.0) / need + 1e-9) for key, need in bundle.items() if need > 0]
    return min(counts) if counts else sys.maxsize


def check(cluster: Cluster, workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Raise InfeasibleTrialsError when a trial of this shape can never be placed on `cluster`."""
    bundles = worker_demand(workers, cpus_per_worker, gpus_per_worker)
    bundle = bundles[0]
    shapes = [*cluster.nodes, *(shape for shape, count in cluster.node_types if count != 0)]
    need = ", ".join(f"{bundle[k]:g} {k}" for k in RESOURCES if bundle[k] > 0)
    where = "this machine's Ray" if cluster.local else "the cluster"
    largest = {k: max((s.get(k, 0.0) for s in shapes), default=0.0) for k in RESOURCES}
    has = ", ".join(f"{largest[k]:g} {k}" for k in RESOURCES)
    if not any(_fits(bundle, shape) >= 1 for shape in shapes):
        raise InfeasibleTrialsError(
            f"a worker needs {need} (--cpus-per-worker {cpus_per_worker:g}, --gpus-per-worker "
            f"{gpus_per_worker:g}) but the largest node {'type ' if cluster.autoscaling else ''}of {where} "
            f"has {has}; trials would wait forever: lower them"
            + ("" if cluster.local or cluster.autoscaling else " or add larger nodes")
        )
    if cluster.autoscaling:
        per_type = [(_fits(bundle, shape), count) for shape, count in cluster.node_types]
        capacity = sum(
            0 if fits == 0 else sys.maxsize if count < 0 else fits * count for fits, count in per_type
        )
        capacity = max(capacity, sum(_fits(bundle, node) for node in cluster.nodes))
    else:
        capacity = sum(_fits(bundle, node) for node in cluster.nodes)
    if capacity < workers:
        total = {k: sum(node.get(k, 0.0) for node in cluster.nodes) for k in RESOURCES}
        raise InfeasibleTrialsError(
            f"a trial needs {workers} workers x {need} (--workers-per-trial {workers}) but "
            f"{where} can place only {capacity} such workers at once "
            f"({', '.join(f'{total[k]:g} {k}' for k in RESOURCES)} in all); trials would wait forever: "
            "lower --workers-per-trial or --cpus-per-worker"
        )


def wait_note_seconds() -> float:
    raw = os.environ.get(WAIT_NOTE_ENV, str(DEFAULT_WAIT_NOTE_S))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise InfeasibleTrialsError(f"{WAIT_NOTE_ENV}={raw!r} is invalid: it must be a number of seconds > 0")
    return value


class WaitingForResources(tune.Callback):
    """Tune callback: a note when trials have been waiting for `after_s` seconds while no trial
    reported anything (every trial waits for resources that do not come), repeated every `after_s`.

    A trial counts as waiting while Tune holds it PENDING, or RUNNING before its first result (a
    multi-worker trial's driver runs while its Train workers wait for a placement group)."""

    def __init__(
        self,
        demand: str,
        after_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        free_resources: Callable[[], dict[str, float]] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.demand = demand
        self.after_s = after_s
        self._clock = clock
        self._free = free_resources or _ray_free_resources
        self._say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._last_progress = clock()
        self._last_note = -math.inf
        self._results: dict[str, int] = {}

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = self._clock()
        results = {t.trial_id: _result_count(t) for t in trials}
        if any(results[k] > self._results.get(k, 0) for k in results):
            self._last_progress = now
        self._results = results
        waiting = [
            t for t in trials if t.status == "PENDING" or (t.status == "RUNNING" and not results[t.trial_id])
        ]
        if not waiting or now - self._last_progress < self.after_s or now - self._last_note < self.after_s:
            return
        self._last_note = now
        free = self._free()
        minutes = (now - self._last_progress) / 60
        self._say(
            f"Note: {len(waiting)} trial(s) have waited {minutes:.0f} min and no trial has reported since; "
            f"each needs {self.demand}, and Ray has "
            f"{', '.join(f'{free.get(k, 0.0):g} {k}' for k in RESOURCES)} free now. If they never fit, stop "
            "with Ctrl-C (the study stays resumable) and check `ray status`."
        )


def _result_count(trial: Any) -> int:
    return int(trial.last_result.get("training_iteration", 0) or 0)


def _ray_free_resources() -> dict[str, float]:
    import ray

    return ray.available_resources()
