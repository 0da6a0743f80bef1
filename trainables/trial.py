"""The Ray Tune function trainable: one call trains one trial config.

Single-worker trials take the fast path: the loop runs right here in the Tune trial process (a
TorchTrainer costs ~10-20 s to start on a small machine, more than a digits trial's whole training).
Multi-worker trials build a Ray Train `TorchTrainer` (DDP across workers) whose run is named after the
Tune trial, so a restarted trial finds its Train run's checkpoints again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import fused_trial, loop, param_server, sessions
from .config import TrainConfig
from .tasks import Task

TASK_KEY = "__optsweep_task"
"""Where a multi-worker trial hands its task object to the Train workers (not a hyperparameter)."""
OPTIMIZER_KEY = "__optsweep_optimizer_class"

DRIVER_MEMORY_BYTES = 64 * 2**20
"""What the Tune trial of a multi-worker run reserves for itself: it only waits on its TorchTrainer, so
no CPU (a fraction of one would keep a worker group that fills a node exactly from ever starting), only
some memory (Tune needs a non-empty reservation)."""
REQUIRED_KEYS = ("optimizer", "lr", "settings")
"""What every trial config of a study holds; without them a trial would silently train the defaults."""


class IncompleteTrialConfigError(ValueError):
    """A trial config without the keys every study sets (e.g. Tune restored a damaged experiment)."""


def check_trial_config(config: dict[str, Any]) -> None:
    """Refuse a trial config that lacks what a study always sets (one line naming what is missing)."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if "seed" not in config and "__trial_index__" not in config:
        missing.append("seed")
    if not missing and not (isinstance(config["settings"], dict) and config["settings"]):
        missing.append("settings (empty)")
    if missing:
        raise IncompleteTrialConfigError(
            f"trial config lacks {', '.join(missing)} (keys: {sorted(config) or 'none'}); refusing to train "
            "defaults in its place: the experiment this trial came from is damaged"
        )


def run_trial(
    config: dict[str, Any],
    task: Task | None = None,
    optimizers: Mapping[str, type] | None = None,
    run_settings: dict[str, Any] | None = None,
    decisions: fused_trial.MemberDecisions | None = None,
) -> None:
    """Tune function trainable: train the trial `config` (flat trial config, see `TrainConfig`, or a fused
    group's: `trainables.fused_trial`, which learns the scheduler's `decisions`).

    `task` and `optimizers` (given with `tune.with_parameters`) are what is trained and the user's optimizer
    classes by the label that trial configs name in `optimizer` (one experiment holds every optimizer's
    trials); None, or a label without a class, builds the config's task and optimizer. `run_settings`
    (resources, data directory) are this run's and win over the stored config's: a trial resumed by a
    rerun with corrected resources (or generated from the stored search space) uses them.
    """
    if fused_trial.is_fused(config):
        fused_trial.run_fused_trial(config, task, run_settings, decisions)
        return
    check_trial_config(config)
    if run_settings:
        config = {**config, "settings": {**config["settings"], **run_settings}}
    train_config = TrainConfig.from_trial_config(config)
    optimizer = (optimizers or {}).get(str(config["optimizer"]))
    if train_config.mode == "async-ps":
        param_server.run(train_config, sessions.TuneSession(), task, optimizer)
    elif train_config.workers == 1:
        loop.train(train_config, sessions.TuneSession(), task, optimizer)
    else:
        _run_torch_trainer(train_config, config, task, optimizer)


def trial_resources(config: TrainConfig) -> dict[str, float]:
    """What a Tune trial reserves: the whole worker on the fast path, no CPU for a Train driver (its
    TorchTrainer reserves the workers; async-ps: its server and workers are actors that reserve their own,
    see `actor_bundles`)."""
    if config.workers == 1 and config.mode != "async-ps":
        return {"CPU": config.cpus_per_worker, "GPU": config.gpus_per_worker}
    return {"CPU": 0.0, "GPU": 0.0, "memory": DRIVER_MEMORY_BYTES}


def actor_bundles(config: TrainConfig) -> list[dict[str, float]]:
    """What a trial's own workers reserve besides `trial_resources` (for feasibility checks): the Train
    workers of a multi-worker run, or the async-ps server (memory only) and its `workers` workers."""
    worker = {"CPU": config.cpus_per_worker, "GPU": config.gpus_per_worker}
    if config.mode == "async-ps":
        server = {"CPU": 0.0, "GPU": 0.0, "memory": float(param_server.SERVER_MEMORY_BYTES)}
        return [server] + [dict(worker) for _ in range(config.workers)]
    if config.workers == 1:
        return []
    return [dict(worker) for _ in range(config.workers)]


def _train_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    train_config = TrainConfig.from_trial_config(config)
    session = sessions.TrainWorkerSession(config["__optsweep_trial_id"], train_config.scheduler_decisions)
    loop.train(train_config, session, config.get(TASK_KEY), config.get(OPTIMIZER_KEY))


def _run_torch_trainer(
    train_config: TrainConfig, config: dict[str, Any], task: Task | None, optimizer: type | None
) -> None:
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    context = tune.get_context()
    trial_id = context.get_trial_id()
    storage = context.get_storage()
    use_gpu = train_config.gpus_per_worker > 0
    resources = {"CPU": train_config.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = train_config.gpus_per_worker
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            **config,
            "__optsweep_trial_id": trial_id,
            TASK_KEY: task,
            OPTIMIZER_KEY: optimizer,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_config.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=f"{storage.storage_fs_path}/{storage.experiment_dir_name}/train_runs",
            storage_filesystem=storage.storage_filesystem,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=train_config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()
