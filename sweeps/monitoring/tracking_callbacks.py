"""The Tune logger callbacks behind `--log-to` (`sweeps.monitoring.tracking` builds them, only for a
study that logs).

Each is Ray Tune's own logger callback (TBXLoggerCallback, MLflowLoggerCallback, WandbLoggerCallback),
made fail-soft and given the report's identity of every trial. Ray's MLflow and W&B integrations import
their packages (seconds each), so this module is imported only when a backend is switched on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import TBXLoggerCallback

from optsweep.sweeps import _ray_compat
from optsweep.sweeps.monitoring.member_tracking import MemberRuns
from optsweep.sweeps.monitoring.tracking import (
    KIND_TAG,
    MLFLOW,
    TAG_PREFIX,
    TENSORBOARD,
    TRIAL_KIND,
    WANDB,
    StudyTracking,
    describe_error,
    ensure_mlflow_experiment,
)
from optsweep.sweeps.record.trial_identity import ConfigurationIds

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class _FailSoft:
    """Mixed into a Ray logger callback: every hook is guarded, so that an error in the backend costs
    one warning line (through the study's tracking) and switches the backend off, never a trial. Also
    gives the callback the report's identity of every trial, and hands it a fused group's members as
    trials of their own (`sweeps.monitoring.member_tracking`)."""

    backend: str

    def _init_fail_soft(self, tracking: StudyTracking) -> None:
        self.tracking = tracking
        self.identities = ConfigurationIds()
        self.member_runs = MemberRuns()  # a fused group's trial is logged as its members

    def _guard(self, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.backend in self.tracking.failed:
            return None
        try:
            trials = kwargs.get("trials")
            if trials is not None:
                self.identities.update(self.member_runs.expand(trials))
            return hook(*args, **kwargs)
        except Exception as error:
            self.tracking.fail(self.backend, describe_error(error))
            return None

    def _per_trial(
        self, hook: Callable[..., Any], iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A hook about one trial; a fused group's own start, save and restore are not its members'."""
        if not self.member_runs.is_group(trial):
            self._guard(hook, iteration=iteration, trials=trials, trial=trial, **info)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self._guard(super().setup, *args, **kwargs)  # type: ignore[misc]

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._guard(super().on_step_begin, iteration=iteration, trials=trials, **info)  # type: ignore[misc]

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._guard(super().on_step_end, iteration=iteration, trials=trials, **info)  # type: ignore[misc]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._per_trial(super().on_trial_start, iteration, trials, trial, **info)  # type: ignore[misc]

    def on_trial_restore(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._per_trial(super().on_trial_restore, iteration, trials, trial, **info)  # type: ignore[misc]

    def on_trial_save(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._per_trial(super().on_trial_save, iteration, trials, trial, **info)  # type: ignore[misc]

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if not self.member_runs.is_group(trial):
            self._guard(
                super().on_trial_result,  # type: ignore[misc]
                iteration=iteration,
                trials=trials,
                trial=trial,
                result=result,
                **info,
            )
            return
        started, results, ended = self.member_runs.on_result(trial, result)
        for member in started:
            self._guard(super().on_trial_start, iteration=iteration, trials=trials, trial=member, **info)  # type: ignore[misc]
        for member, member_result in results:
            self._guard(
                super().on_trial_result,  # type: ignore[misc]
                iteration=iteration,
                trials=trials,
                trial=member,
                result=member_result,
                **info,
            )
        for member in ended:
            self._guard(super().on_trial_complete, iteration=iteration, trials=trials, trial=member, **info)  # type: ignore[misc]

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for member in self._ending(trial):
            self._guard(super().on_trial_complete, iteration=iteration, trials=trials, trial=member, **info)  # type: ignore[misc]

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._per_trial(super().on_trial_recover, iteration, trials, trial, **info)  # type: ignore[misc]

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for member in self._ending(trial):
            self._guard(super().on_trial_error, iteration=iteration, trials=trials, trial=member, **info)  # type: ignore[misc]

    def _ending(self, trial: Trial) -> list[Any]:
        """The trial, or a fused group's members whose runs are still open."""
        return self.member_runs.on_end(trial) if self.member_runs.is_group(trial) else [trial]

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._per_trial(super().on_checkpoint, iteration, trials, trial, **info)  # type: ignore[misc]

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._guard(super().on_experiment_end, trials=trials, **info)  # type: ignore[misc]


def _scalar_params(identity: Any) -> dict[str, Any]:
    """The identity and the hyperparameters, as values TensorBoard's hparams plugin accepts."""
    params: dict[str, Any] = dict(identity.tags())
    for key, value in identity.hyperparameters.items():
        params[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return params


class TensorBoardCallback(_FailSoft, TBXLoggerCallback):
    """Tune's TensorBoard logger (event files in each trial's directory: every reported metric per
    epoch under ray/tune/), with the trial's identity in the hparams view (filter by config_id)."""

    backend = TENSORBOARD

    def __init__(self, tracking: StudyTracking) -> None:
        super().__init__()
        self._init_fail_soft(tracking)


def _log_identity_hparams(callback: TensorBoardCallback, trial: Trial, result: dict[str, Any]) -> None:
    """Where Ray writes a trial's hparams at its end: the identity, not Tune's raw search variables."""
    from tensorboardX.summary import hparams

    summaries = hparams(hparam_dict=_scalar_params(callback.identities.of(trial)), metric_dict=result)
    for summary in summaries:
        _ray_compat.tensorboard_trial_writer(callback, trial).file_writer.add_summary(summary)


_ray_compat.replace_tensorboard_hparams(TensorBoardCallback, _log_identity_hparams)


class MLflowCallback(_FailSoft, MLflowLoggerCallback):
    """Tune's MLflow logger: one run per trial (params: its config; metrics: every reported number
    per epoch), tagged optsweep.optimizer / .config_id / .seed and named <config_id>-seed<seed>."""

    backend = MLFLOW

    def __init__(self, tracking: StudyTracking) -> None:
        super().__init__(
            tracking_uri=tracking.mlflow_uri,
            experiment_name=tracking.name,
            tags={KIND_TAG: TRIAL_KIND, f"{TAG_PREFIX}study": tracking.name},
        )
        self._init_fail_soft(tracking)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        def create_then_setup() -> None:
            from mlflow import MlflowClient

            # The search creates the MLflow experiment, the confirmation finds it (and Ray's setup sets
            # MLflow's process-wide tracking URI and experiment).
            client = MlflowClient(self.tracking.mlflow_uri)
            ensure_mlflow_experiment(client, self.tracking.name, self.tracking.mlflow_artifact_location)
            MLflowLoggerCallback.setup(self, *args, **kwargs)

        self._guard(create_then_setup)

    def log_trial_start(self, trial: Trial) -> None:
        identity = self.identities.of(trial)
        shared = self.tags
        self.tags = {**shared, **{TAG_PREFIX + k: v for k, v in identity.tags().items()}}
        try:
            super().log_trial_start(trial)
        finally:
            self.tags = shared
        from mlflow import MlflowClient

        MlflowClient(self.tracking.mlflow_uri).set_tag(
            _ray_compat.mlflow_trial_run_id(self, trial), "mlflow.runName", identity.run_name
        )

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        # The config is already the run's params; as metrics it would only repeat them every epoch.
        super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})


class _FlushingWandbActor(_ray_compat.wandb_logging_actor_class()):  # type: ignore[misc]
    """Ray's W&B logging actor, waiting at the end until W&B's own service has written the run out:
    Ray kills the actor as soon as `run` returns, and wandb 0.2x+ writes from a separate process, so
    without this the last records of a run, or all of them, were lost here (1 run in 4)."""

    def run(self) -> None:
        super().run()
        import wandb

        wandb.teardown()


class WandbCallback(_FailSoft, WandbLoggerCallback):
    """Tune's W&B logger (one run per trial, logged from a small Ray actor): the run is grouped by
    its configuration id, its job type is the optimizer, its name <config_id>-seed<seed>."""

    backend = WANDB

    def __init__(self, tracking: StudyTracking) -> None:
        super().__init__(
            project=tracking.wandb_project,
            dir=tracking.wandb_dir,
            mode=tracking.wandb_mode,
            settings={"silent": True},
        )
        self._init_fail_soft(tracking)

    def log_trial_start(self, trial: Trial) -> None:
        identity = self.identities.of(trial)
        shared = self.kwargs
        self.kwargs = {
            **shared,
            "group": identity.config_id,
            "job_type": identity.optimizer,
            "name": identity.run_name,
            "tags": [identity.optimizer, identity.config_id, identity.stage],
        }
        try:
            super().log_trial_start(trial)
        finally:
            self.kwargs = shared


CALLBACKS: dict[str, Callable[[StudyTracking], tune.Callback]] = {
    TENSORBOARD: TensorBoardCallback,
    MLFLOW: MLflowCallback,
    WANDB: WandbCallback,
}


def _report_failed_runs(callback: WandbCallback, futures: list[Any], timeout: float) -> None:
    """Where Ray ends the logging actors (and drops what they raised): a W&B run that failed is the
    warning line."""
    done, _ = ray.wait(futures, num_returns=len(futures), timeout=timeout)
    for future in done:
        try:
            ray.get(future)
        except Exception as error:
            callback.tracking.fail(callback.backend, describe_error(getattr(error, "cause", None) or error))


_ray_compat.use_wandb_logging_actor(WandbCallback, _FlushingWandbActor)
_ray_compat.before_wandb_cleanup(WandbCallback, _report_failed_runs)
