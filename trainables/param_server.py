"""Asynchronous parameter server (Downpour SGD, Dean et al. 2012) on Ray actors: training mode async-ps.

A `ParameterServer` actor holds the parameters and one optimizer; `workers` `GradientWorker` actors each
pull the parameters, compute a gradient on a batch of their own shard of the training data and push
it, without waiting for each other. The server applies every gradient as it arrives (one at a time) and
records its staleness: the updates other workers applied between this worker's pull and its push.
With `staleness_aware_lr` the update's lr is divided by max(1, staleness) (Zhang et al. 2016).

The budget is the synchronous loop's: an epoch is as many updates as the workers' shards have batches
in total (every training example once). At each epoch boundary the server keeps a snapshot of its
state; the driver (`run`, inside a Tune trial or a plain process) evaluates it with the loop's
`evaluate`, reports the loop's per-epoch metrics plus staleness statistics, and checkpoints it with
`trainables.checkpoints`. Faults: a dead worker is replaced (by a fresh actor on the same shard) and
training goes on; a dead server is restarted from the last checkpoint, with fresh workers. The server
updates on the CPU; workers compute gradients on their device (a GPU when they have one).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from optsweep import vocabulary as v
from optsweep.optimizers import schedules
from optsweep.vocabulary import (
    STALENESS_COUNTS,
    STALENESS_MAX,
    STALENESS_MEAN,
    STALENESS_P50,
    STALENESS_P90,
    UPDATES,
)

from . import checkpoints, data, decisions, faults, optimizer_choice
from .config import TrainConfig
from .loop import Session, diverged_metrics, evaluate, nonfinite_validation, seed_everything
from .tasks import Task, build_task, param_groups

WORKER_RESTARTS = "worker_restarts"
SERVER_RESTARTS = "server_restarts"
STALL_TIMEOUT_S = 600.0
"""The driver gives up (with an error naming the epoch) if no epoch completes for this long."""
SERVER_MEMORY_BYTES = 256 * 2**20


def server_crash_marker(directory: str | Path, epoch: int) -> Path:
    """Fault injection (tests): the server dies at its first update of `epoch` when this file exists."""
    return Path(directory) / f"crash-server-epoch{epoch}"


def _maybe_crash_server(epoch: int) -> None:
    directory = os.environ.get(faults.ENV)
    if not directory:
        return
    marker = server_crash_marker(directory, epoch)
    try:
        marker.rename(marker.with_name(marker.name + ".fired"))
    except FileNotFoundError:
        return
    os._exit(1)


def updates_per_epoch(train_size: int, batch_size: int, workers: int) -> int:
    """Updates in one pass over the training data: every worker's shard in batches (as the loop's)."""
    shard = math.ceil(train_size / workers)
    return workers * math.ceil(shard / batch_size)


def _build_optimizer(
    config: TrainConfig, model: torch.nn.Module, task: Task, cls: type | None
) -> torch.optim.Optimizer:
    groups = param_groups(model, task.weight_decay)
    return optimizer_choice.build(config.optimizer_class or config.optimizer, groups, config.hparams, cls=cls)


class ParameterServer:
    """The parameters, the optimizer and its schedule; applies each pushed gradient as it arrives.

    Runs as a threaded Ray actor: pushes are applied one at a time under a lock while the driver waits
    for epoch snapshots in another thread."""

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        optimizer_class: type | None,
        per_epoch: int,
        state: dict[str, Any] | None,
    ) -> None:
        torch.set_num_threads(1)
        seed_everything(config.seed)
        self.config, self.per_epoch = config, per_epoch
        self.max_epochs = config.max_epochs or task.max_epochs
        self.model = task.model()
        self.params = [p for p in self.model.parameters()]
        self.optimizer = _build_optimizer(config, self.model, task, optimizer_class)
        options = {"mode": task.target.mode} if config.schedule == "plateau" else {}
        self.scheduler = schedules.build(
            config.schedule, self.optimizer, self.max_epochs * per_epoch, **options
        )
        self.version = 0
        self.counts: list[int] = []
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.version = int(state[UPDATES])
            self.counts = [int(c) for c in state[STALENESS_COUNTS].tolist()]
        self.epoch_staleness: list[int] = []
        self.epoch_loss, self.epoch_samples = 0.0, 0
        self.epoch_started: float | None = None  # at the first gradient (worker start-up is not training)
        self.diverged = False
        self.bound = config.divergence_bound(task.divergence_loss)
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.condition = threading.Condition()

    @property
    def done(self) -> bool:
        return self.diverged or self.version >= self.max_epochs * self.per_epoch

    def epoch(self) -> int:
        """The epoch the next update belongs to."""
        return self.version // self.per_epoch + 1

    def pull(self) -> tuple[int, list[torch.Tensor], int, bool]:
        with self.condition:
            return self.version, [p.detach().clone() for p in self.params], self.epoch(), self.done

    def push(
        self, grads: list[torch.Tensor], pulled: int, loss: float, samples: int
    ) -> tuple[int, list[torch.Tensor], int, bool]:
        """Apply one gradient computed on the parameters of version `pulled`; returns what `pull` does."""
        with self.condition:
            if self.done:
                return self.version, [p.detach().clone() for p in self.params], self.epoch(), True
            if not math.isfinite(loss) or loss > self.bound:
                self.diverged = True
                self._snapshot()
                return self.version, [p.detach().clone() for p in self.params], self.epoch(), True
            if self.version % self.per_epoch == 0:
                _maybe_crash_server(self.epoch())
            staleness = self.version - pulled
            if self.epoch_started is None:
                self.epoch_started = time.perf_counter()
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g.to(p.device)
            saved = [group["lr"] for group in self.optimizer.param_groups]
            if self.config.staleness_aware_lr and staleness > 1:
                for group in self.optimizer.param_groups:
                    group["lr"] = group["lr"] / staleness
            self.optimizer.step()
            for group, lr in zip(self.optimizer.param_groups, saved, strict=True):
                group["lr"] = lr
            if not schedules.needs_metric(self.scheduler):
                self.scheduler.step()
            self.version += 1
            self.epoch_staleness.append(staleness)
            while len(self.counts) <= staleness:
                self.counts.append(0)
            self.counts[staleness] += 1
            self.epoch_loss += loss * samples
            self.epoch_samples += samples
            if self.version % self.per_epoch == 0:
                self._snapshot()
            return self.version, [p.detach().clone() for p in self.params], self.epoch(), self.done

    def _snapshot(self) -> None:
        epoch = self.version // self.per_epoch if not self.diverged else self.epoch()
        now = time.perf_counter()
        started = self.epoch_started if self.epoch_started is not None else now
        staleness = torch.tensor(self.epoch_staleness or [0], dtype=torch.float64)
        self.snapshots[epoch] = {
            "model": {k: t.detach().clone() for k, t in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            UPDATES: self.version,
            STALENESS_COUNTS: torch.tensor(self.counts, dtype=torch.int64),
            "epoch": epoch,
            "stats": {
                v.TRAIN_LOSS: self.epoch_loss / max(self.epoch_samples, 1),
                v.EPOCH_TIME_S: now - started,
                v.SAMPLES_PER_S: self.epoch_samples / max(now - started, 1e-9),
                STALENESS_MEAN: float(staleness.mean()),
                STALENESS_P50: float(staleness.quantile(0.5)),
                STALENESS_P90: float(staleness.quantile(0.9)),
                STALENESS_MAX: float(staleness.max()),
                v.DIVERGED_FLAG: self.diverged,
            },
        }
        self.epoch_staleness, self.epoch_loss, self.epoch_samples = [], 0.0, 0
        self.epoch_started = now
        self.condition.notify_all()

    def wait_snapshot(self, epoch: int, timeout_s: float) -> dict[str, Any] | None:
        """The state at the end of `epoch` (or at divergence) once there; None after `timeout_s`."""
        with self.condition:
            self.condition.wait_for(lambda: epoch in self.snapshots or self.diverged, timeout=timeout_s)
            if self.diverged:
                return next(iter(self.snapshots.values()))
            return self.snapshots.pop(epoch, None)

    def scheduler_metric(self, value: float) -> None:
        """A plateau schedule steps on the epoch's validation metric (sent by the driver)."""
        with self.condition:
            if schedules.needs_metric(self.scheduler):
                self.scheduler.step(value)


class GradientWorker:
    """Pulls the parameters, computes a gradient on its own shard, pushes it; repeats until done."""

    def __init__(self, config: TrainConfig, task: Task, index: int, workers: int, delay_s: float) -> None:
        torch.set_num_threads(1)
        import ray

        seed_everything(config.seed + 1000 * (index + 1))
        self.index, self.delay_s = index, delay_s
        gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        self.device = torch.device("cuda" if gpu else "cpu")
        self.task = task
        self.model = task.model().to(self.device)
        self.params = list(self.model.parameters())
        self.loader = data.make_loader(
            task.data().train,
            config.batch_size or task.batch_size,
            shuffle=True,
            seed=config.seed,
            rank=index,
            world_size=workers,
        )

    def ready(self) -> bool:
        return True

    def run(self, server: Any) -> int:
        """Train until the server says done; returns the gradients this worker pushed."""
        import ray

        version, params, epoch, done = ray.get(server.pull.remote())
        pushed, seen_epoch, pass_index = 0, None, 0
        while not done:
            pass_index += 1
            self.loader.set_epoch(pass_index)
            for inputs, targets in self.loader:
                if epoch != seen_epoch:
                    seen_epoch = epoch
                    faults.maybe_crash(self.index, epoch)
                if self.delay_s:
                    time.sleep(self.delay_s)
                with torch.no_grad():
                    for p, value in zip(self.params, params, strict=True):
                        p.copy_(value)
                self.model.train()
                self.model.zero_grad(set_to_none=True)
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                loss = self.task.loss(self.model(inputs), targets)
                loss.backward()
                grads = [p.grad.detach().cpu() for p in self.params]
                version, params, epoch, done = ray.get(
                    server.push.remote(grads, version, float(loss.detach()), len(targets))
                )
                pushed += 1
                if done:
                    break
        return pushed


def run(
    config: TrainConfig,
    session: Session,
    task: Task | None = None,
    optimizer_class: type | None = None,
) -> dict[str, Any]:
    """Train `config` with a parameter server and `config.workers` asynchronous workers (Ray actors);
    reports per epoch through `session` like the loop (plus staleness statistics); returns the last
    metrics. Needs a running Ray."""
    import ray

    if task is None:
        task = build_task(config.task, config.task_args, data_dir=config.data_dir)
    batch_size = config.batch_size or task.batch_size
    max_epochs = config.max_epochs or task.max_epochs
    seed_everything(config.seed)
    splits = task.data()
    per_epoch = updates_per_epoch(len(splits.train), batch_size, config.workers)  # type: ignore[arg-type]
    eval_loaders = {
        prefix: data.make_loader(split, batch_size, shuffle=False, seed=config.seed)
        for prefix, split in ((v.VAL_PREFIX, splits.val), (v.TEST_PREFIX, splits.test))
        if split is not None
    }
    model = task.model()
    found = session.latest_checkpoint()
    state = found.state
    best = float(state["best"]) if state is not None else math.nan
    resumed_from = int(state["epoch"]) if state is not None else None
    # Outside the Tune trial's placement group (which holds the driver only), like a TorchTrainer's workers.
    server_options = {
        "num_cpus": 0,
        "memory": SERVER_MEMORY_BYTES,
        "max_concurrency": config.workers + 4,
        "scheduling_strategy": "DEFAULT",
    }
    worker_options = {
        "num_cpus": config.cpus_per_worker,
        "num_gpus": config.gpus_per_worker,
        "scheduling_strategy": "DEFAULT",
    }
    server_cls = ray.remote(ParameterServer).options(**server_options)
    worker_cls = ray.remote(GradientWorker).options(**worker_options)

    def delay(index: int) -> float:
        return config.straggler_delay_s if index == config.workers - 1 else 0.0

    def start_worker(index: int, server: Any) -> tuple[Any, Any]:
        worker = worker_cls.remote(config, task, index, config.workers, delay(index))
        return worker, worker.run.remote(server)

    def start_workers(server: Any) -> list[tuple[Any, Any]]:
        """All workers started before any trains (process start-up skew is not what is measured)."""
        created = [
            worker_cls.remote(config, task, i, config.workers, delay(i)) for i in range(config.workers)
        ]
        ray.get([w.ready.remote() for w in created])
        return [(w, w.run.remote(server)) for w in created]

    restarts = {WORKER_RESTARTS: 0, SERVER_RESTARTS: 0}
    actors: list[Any] = []
    metrics: dict[str, Any] = {}
    try:
        while True:  # one pass per server life
            server = server_cls.remote(config, task, optimizer_class, per_epoch, state)
            workers = start_workers(server)
            actors[:] = [server, *(w for w, _ in workers)]
            running = {ref: i for i, (_, ref) in enumerate(workers)}
            epoch = (int(state["epoch"]) if state is not None else 0) + 1
            server_alive = True
            while server_alive and epoch <= max_epochs:
                snapshot_ref = server.wait_snapshot.remote(epoch, STALL_TIMEOUT_S)
                while server_alive:
                    ready, _ = ray.wait([snapshot_ref, *running], num_returns=1, timeout=STALL_TIMEOUT_S + 60)
                    if not ready:
                        raise TimeoutError(
                            f"async-ps: no progress in epoch {epoch} for {STALL_TIMEOUT_S:.0f} s"
                        )
                    if ready[0] == snapshot_ref:
                        break
                    index = running.pop(ready[0])
                    try:
                        ray.get(ready[0])  # finished: the server is done
                    except ray.exceptions.RayActorError:
                        if not _alive(ray, server):
                            server_alive = False
                            break
                        restarts[WORKER_RESTARTS] += 1
                        ray.kill(workers[index][0])
                        workers[index] = start_worker(index, server)
                        running[workers[index][1]] = index
                        actors[:] = [server, *(w for w, _ in workers)]
                if not server_alive:
                    break
                try:
                    snapshot = ray.get(snapshot_ref)
                except ray.exceptions.RayActorError:
                    server_alive = False
                    break
                if snapshot is None:
                    raise TimeoutError(f"async-ps: epoch {epoch} did not complete in {STALL_TIMEOUT_S:.0f} s")
                metrics, state, best = _epoch_report(
                    snapshot, model, eval_loaders, task, best, resumed_from, restarts, session, server
                )
                resumed_from = None
                if metrics[v.DIVERGED_FLAG] or (epoch < max_epochs and _should_stop(config, session, epoch)):
                    return metrics
                epoch += 1
            if server_alive:
                return metrics
            # The server died: everything restarts from the last checkpoint (or from scratch).
            restarts[SERVER_RESTARTS] += 1
            if restarts[SERVER_RESTARTS] > config.max_failures:
                raise RuntimeError(
                    f"async-ps: the parameter server died {restarts[SERVER_RESTARTS]} times "
                    f"(max_failures {config.max_failures})"
                )
            for actor in actors:
                ray.kill(actor)
            resumed_from = int(state["epoch"]) if state is not None else 0
    finally:
        for actor in actors:
            ray.kill(actor)


def _should_stop(config: TrainConfig, session: Session, epoch: int) -> bool:
    """Multi-worker trials under ASHA get the scheduler's decision on a channel (trainables.decisions),
    as the synchronous loop's Train workers do; otherwise the session decides."""
    if config.scheduler_decisions is None:
        return session.should_stop(epoch)
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    return decisions.wait_for_stop_decision(config.scheduler_decisions, trial_id, epoch)


def _alive(ray: Any, server: Any) -> bool:
    try:
        ray.get(server.pull.remote(), timeout=60)
    except ray.exceptions.RayActorError:
        return False
    return True


def _epoch_report(
    snapshot: dict[str, Any],
    model: torch.nn.Module,
    eval_loaders: dict[str, Any],
    task: Task,
    best: float,
    resumed_from: int | None,
    restarts: dict[str, int],
    session: Session,
    server: Any,
) -> tuple[dict[str, Any], dict[str, Any], float]:
    target = task.target
    stats = snapshot["stats"]
    epoch = snapshot["epoch"]
    metrics: dict[str, Any] = {
        v.EPOCH: epoch,
        v.LR: float(snapshot["optimizer"]["param_groups"][0]["lr"]),
        UPDATES: snapshot[UPDATES],
        v.NODE_ID: getattr(session, "node_id", "local"),
        **restarts,
        **{k: val for k, val in stats.items() if k != v.DIVERGED_FLAG},
    }
    if resumed_from is not None:
        metrics[v.RESUMED_FROM_EPOCH] = resumed_from
    reason = None
    if stats[v.DIVERGED_FLAG]:
        reason = f"train_loss was not finite or above the divergence bound by epoch {epoch}"
    else:
        model.load_state_dict(snapshot["model"])
        evaluated = {
            prefix + name: value
            for prefix, loader in eval_loaders.items()
            for name, value in evaluate(model, loader, task, torch.device("cpu"), False).items()
        }
        reason = nonfinite_validation(evaluated, target, epoch)
    if reason is not None:
        print(f"diverged: {reason}", file=sys.stderr, flush=True)  # in the trial's log
        metrics |= diverged_metrics(target, best, reason)
        session.report(metrics, None)
        return metrics, snapshot, best
    score = evaluated[target.key]
    server.scheduler_metric.remote(score)
    if math.isnan(best) or target.better(score, best):
        best = score
    metrics |= {**evaluated, target.best_key: best, v.DIVERGED_FLAG: False}
    state = {key: snapshot[key] for key in ("model", "optimizer", "scheduler", UPDATES, STALENESS_COUNTS)}
    state |= {"epoch": epoch, "best": best, "mode": "async-ps"}
    with tempfile.TemporaryDirectory(prefix="optsweep-ckpt-") as directory:
        checkpoints.save(directory, state, 0, durable=False)
        session.report(metrics, directory)
    return metrics, state, best
