"""The fence around Ray's internals: every Ray-private name optsweep needs, and nothing else.

Each use is one small function here whose docstring says why no public API of Ray 2.60 serves.
`tests/test_ray_contract.py` checks each name still exists with the shape used here, so that a Ray
upgrade fails there first, loudly; `tests/test_ray_contract.py` also fails when a Ray-private name
appears anywhere else in the source tree. Nothing here degrades silently: a name Ray removed raises
where it is used (AttributeError, ImportError), never a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.tune import TuneConfig, Tuner
    from ray.tune.experiment import Trial

PRIVATE_NAMES = (
    "_private",
    "ENABLE_RAY_CLUSTER",
    "generate_new_authentication_token",
    "get_cluster_config",
    "_tune_controller",
    "_mark_trial_to_checkpoint",
    "_is_ray_client",
    "_local_tuner",
    "_tune_config",
    "_Trial__unresolved_config",
    "_trial_writer",
    "_try_log_hparams",
    "_trial_runs",
    "_WandbLoggingActor",
    "_logger_actor_cls",
    "_cleanup_logging_actors",
    "_trial_logging_futures",
)
"""The Ray-private names reached here (the contract test greps the rest of the tree for them)."""

# ------------------------------------------------------------------ starting and sizing Ray


def swap_cluster_binding_flag(enabled: bool) -> bool:
    """Set the flag a local Ray's start reads to decide whether its servers may serve other machines
    (`ray._private.ray_constants.ENABLE_RAY_CLUSTER`); returns its previous value. With it False, a
    local Ray's node address is 127.0.0.1, so GCS, raylet and workers bind to loopback only.

    Why no public API: Ray 2.60 binds a local cluster to every interface and has no setting for it; the
    flag is read from `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` once, when Ray is imported (the variable is
    still set for the processes the start spawns)."""
    from ray._private import ray_constants

    previous = bool(ray_constants.ENABLE_RAY_CLUSTER)
    ray_constants.ENABLE_RAY_CLUSTER = enabled
    return previous


def new_auth_token() -> str:
    """A new cluster authentication token in Ray's own format
    (`ray._private.authentication.authentication_token_generator.generate_new_authentication_token`).

    Why no public API: optsweep writes `~/.ray/auth_token` itself (mode 0600) before Ray would create it
    readable by everyone; Ray exposes no public generator for the token it expects there."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    return str(generate_new_authentication_token())


def auth_notice_logger() -> str:
    """The logger of the warning `ray.init` prints when it turns token authentication on for a local
    cluster (`ray._private.authentication.authentication_token_setup`: "Token authentication is enabled
    ... Set RAY_AUTH_MODE=disabled to opt out").

    Why no public API: Ray offers no switch for the notice but turning the protection off, which is not
    ours to suggest; optsweep hides the line (its own line says how it started Ray) by this logger's name.
    """
    return "ray._private.authentication.authentication_token_setup"


def autoscaler_node_types() -> list[tuple[dict[str, float], int]]:
    """The node types the connected cluster's autoscaler may start, as (resources, max_count) with -1
    unbounded; [] when no autoscaler published its configuration (a local Ray, a fixed cluster), or when
    the GCS does not answer the request (then the study judges by the nodes there are).

    Why no public API: `ray.autoscaler` and the State API expose the nodes there are, not the node types
    that could be added; only `ray._private.state.state.get_cluster_config()` reads them."""
    import ray
    from ray._private.state import state

    get_cluster_config = state.get_cluster_config
    try:
        config = get_cluster_config()
    except (ray.exceptions.RpcError, ConnectionError, TimeoutError):
        return []
    if config is None:
        return []
    return [(dict(group.resources), int(group.max_count)) for group in config.node_group_configs]


# ------------------------------------------------------------------ schedulers and restored Tuners


def mark_stopped_trial_for_snapshot(tune_controller: Any, trial: Trial) -> None:
    """Make Tune's next experiment snapshot record `trial` (a paused or waiting trial a scheduler has just
    stopped): `TuneController._mark_trial_to_checkpoint`, on the controller inside the
    `TrialRunnerWrapper` that schedulers are handed (its `_tune_controller`). A controller that is not
    Tune's (a scheduler driven by a test) keeps no snapshot: nothing to mark.

    Why no public API: Ray 2.60 re-serialises only the trials it marks, and it marks a stopped trial only
    when it has a live actor; a paused one would stay PAUSED in the experiment state (and read as
    unfinished by the report and by a resume)."""
    controller = _tunes_controller(tune_controller)
    if controller is not None:
        controller._mark_trial_to_checkpoint(trial)


def hold_pending_trial(tune_controller: Any, trial: Trial) -> None:
    """Make a pending trial paused without starting it (a restored seed that must wait at a rung):
    `TuneController._set_trial_status(trial, PAUSED)`, which also takes it off Tune's queues of pending
    trials. Tune resumes it from its checkpoint once the scheduler chooses it, as any paused trial. A
    controller that is not Tune's (a scheduler driven by a test) keeps no queues: the trial's own status
    changes.

    Why no public API: Ray 2.60 starts every pending trial it has resources for, whether the scheduler's
    `choose_trial_to_run` chose it or not (`TuneController._maybe_add_actors`), and `pause_trial` only
    pauses a trial that has a live actor."""
    from ray.tune.experiment import Trial as TuneTrial

    controller = _tunes_controller(tune_controller)
    if controller is not None:
        controller._set_trial_status(trial, TuneTrial.PAUSED)
    else:
        trial.set_status(TuneTrial.PAUSED)


def _tunes_controller(tune_controller: Any) -> Any | None:
    """Tune's `TuneController` inside the `TrialRunnerWrapper` that schedulers are handed (its
    `_tune_controller`), or the controller itself; None for a controller that is not Tune's."""
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController

    if isinstance(tune_controller, TrialRunnerWrapper):
        tune_controller = tune_controller._tune_controller
    return tune_controller if isinstance(tune_controller, TuneController) else None


def restored_tune_config(tuner: Tuner) -> TuneConfig | None:
    """The `TuneConfig` a restored Tuner's fit will use (`Tuner._local_tuner._tune_config`), to be
    updated in place; None under Ray Client, where the Tuner lives in a remote actor.

    Why no public API: `Tuner.restore` restores the stored TuneConfig and takes no new one; Ray 2.60 has
    no way to change e.g. `max_concurrent_trials` for the resumed run."""
    from ray import tune

    if isinstance(tuner, tune.Tuner) and tuner._is_ray_client:
        return None
    config: TuneConfig = tuner._local_tuner._tune_config
    return config


# ------------------------------------------------------------------ Tune's experiment state file


def stored_trial_config_keys() -> tuple[str, str]:
    """The keys of a trial's entry in `experiment_state-*.json` that hold its config: the resolved one and
    the one Tune re-resolves on restore (`Trial.__unresolved_config`, stored name-mangled).

    Why no public API: changing a stored trial's settings for a resumed run (its data directory, its
    resources) means editing the experiment state; Tune restores trials from it as stored."""
    return ("config", "_Trial__unresolved_config")


def stored_resource_request(resources: Mapping[str, float]) -> str:
    """A trial's resource request (`tune.with_resources` dict) as `experiment_state-*.json` stores it in
    a trial's `placement_group_factory` entry (a cloudpickled PlacementGroupFactory, hex).

    Why no public API: as `stored_trial_config_keys`; Tune restores the trials' resources as stored and
    `Tuner.restore` takes no new ones for trials already created."""
    from ray import cloudpickle
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    return str(cloudpickle.dumps(resource_dict_to_pg_factory(dict(resources))).hex())


# ------------------------------------------------------------------ Tune's logger callbacks


def tensorboard_trial_writer(callback: Any, trial: Trial) -> Any:
    """The tensorboardX `SummaryWriter` a `TBXLoggerCallback` writes `trial`'s events with
    (`_trial_writer`). Why no public API: the callback does not expose it, and the hparams summary is
    written to the trial's own event file."""
    return callback._trial_writer[trial]


def replace_tensorboard_hparams(
    callback_class: type, log_hparams: Callable[[Any, Trial, dict[str, Any]], None]
) -> None:
    """Make `callback_class` (a `TBXLoggerCallback` subclass) call `log_hparams(callback, trial, result)`
    where Ray writes a trial's hparams at its end (`_try_log_hparams`). Why no public API: Ray's writes
    Tune's raw search variables; there is no public hook for what the hparams view shows."""
    from ray.tune.logger import TBXLoggerCallback

    if not issubclass(callback_class, TBXLoggerCallback):
        raise TypeError(f"{callback_class.__name__} is not a TBXLoggerCallback")
    callback_class._try_log_hparams = log_hparams


def mlflow_trial_run_id(callback: Any, trial: Trial) -> str:
    """The MLflow run id an `MLflowLoggerCallback` logs `trial` to (`_trial_runs`). Why no public API: the
    callback does not expose it, and the run's name is set afterwards (Ray names runs by trial)."""
    return str(callback._trial_runs[trial])


def wandb_logging_actor_class() -> type:
    """Ray's W&B logging actor class (`ray.air.integrations.wandb._WandbLoggingActor`), to subclass. Why
    no public API: the actor's end (where W&B must flush before Ray kills it) is not a public hook."""
    from ray.air.integrations.wandb import _WandbLoggingActor

    return _WandbLoggingActor


def use_wandb_logging_actor(callback_class: type, actor_class: type) -> None:
    """Make `callback_class` (a `WandbLoggerCallback` subclass) start `actor_class` (a subclass of
    `wandb_logging_actor_class()`) as each trial's logging actor (`_logger_actor_cls`, Ray's hook). Why
    no public API: WandbLoggerCallback takes no actor class."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    if not issubclass(callback_class, WandbLoggerCallback):
        raise TypeError(f"{callback_class.__name__} is not a WandbLoggerCallback")
    if not issubclass(actor_class, wandb_logging_actor_class()):
        raise TypeError(f"{actor_class.__name__} does not subclass Ray's W&B logging actor")
    callback_class._logger_actor_cls = actor_class


def before_wandb_cleanup(callback_class: type, check: Callable[[Any, list[Any], float], None]) -> None:
    """Make `callback_class` (a `WandbLoggerCallback` subclass) call `check(callback, futures, timeout)`
    with its logging actors' futures (`_trial_logging_futures`) where Ray ends them
    (`_cleanup_logging_actors(timeout, kill_on_timeout)`), before Ray's own clean-up (then with timeout
    0: `check` has waited). Why no public API: Ray's clean-up drops what its logging actors raised; a
    W&B run that failed would vanish without a word."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    if not issubclass(callback_class, WandbLoggerCallback):
        raise TypeError(f"{callback_class.__name__} is not a WandbLoggerCallback")
    ray_cleanup = WandbLoggerCallback._cleanup_logging_actors

    def cleanup(self: Any, timeout: int = 0, kill_on_timeout: bool = False) -> None:
        check(self, list(self._trial_logging_futures.values()), timeout)
        ray_cleanup(self, timeout=0, kill_on_timeout=kill_on_timeout)

    callback_class._cleanup_logging_actors = cleanup
