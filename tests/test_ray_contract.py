"""Ray's internals that optsweep reaches, behind one fence (`optsweep.sweeps._ray_compat`).

Two kinds of tests:
- the contract: every Ray-private name the fence uses still exists with the shape the fence uses
  (signatures, attributes, the code paths that read them), so that a Ray upgrade fails here first;
- the fence holds: no Ray-private name appears anywhere else in the source tree (module paths like
  `ray._private`, the names the fence reaches, any other private name of Ray's read or overridden).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optsweep.sweeps import _ray_compat
from optsweep.sweeps.cluster import interrupts

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("optsweep", "optimizers", "trainables", "sweeps", "analysis", "benchmarks", "examples")
FENCE = REPO / "sweeps" / "_ray_compat.py"


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


# ----------------------------------------------------------------------------- the contract


def test_a_local_rays_start_reads_the_cluster_binding_flag_when_it_starts() -> None:
    """`swap_cluster_binding_flag`: a bool in ray_constants, read by the node start (not copied at import)."""
    from ray._private import ray_constants, services

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    assert "ray_constants.ENABLE_RAY_CLUSTER" in inspect.getsource(services)
    before = ray_constants.ENABLE_RAY_CLUSTER
    assert _ray_compat.swap_cluster_binding_flag(not before) is before
    assert ray_constants.ENABLE_RAY_CLUSTER is (not before)
    assert _ray_compat.swap_cluster_binding_flag(before) is (not before)
    assert ray_constants.ENABLE_RAY_CLUSTER is before


def test_new_auth_tokens_are_rays_256_bit_hex_tokens() -> None:
    tokens = {_ray_compat.new_auth_token() for _ in range(3)}
    assert len(tokens) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", token) for token in tokens)


def test_the_autoscaler_configuration_is_read_from_the_gcs_state(ray_session: None) -> None:
    """`autoscaler_node_types`: the state accessor's `get_cluster_config()`; a local Ray publishes none."""
    from ray._private.state import state

    assert _parameters(state.get_cluster_config) == []
    source = inspect.getsource(type(state).get_cluster_config)
    assert "ClusterConfig.FromString" in source and "return None" in source
    assert _ray_compat.autoscaler_node_types() == []


def test_a_stopped_trial_is_marked_for_the_next_experiment_snapshot() -> None:
    """`mark_stopped_trial_for_snapshot`: schedulers get a `TrialRunnerWrapper` around the controller,
    whose `_mark_trial_to_checkpoint(trial)` adds it to the trials the next snapshot re-serialises."""
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
    from ray.tune.experiment import Trial

    assert _parameters(TuneController._mark_trial_to_checkpoint) == ["self", "trial"]
    assert "self._get_trial_checkpoints()" in inspect.getsource(TuneController.save_to_dir)
    assert "in self._trials_to_cache:" in inspect.getsource(TuneController._get_trial_checkpoints)
    controller = TuneController.__new__(TuneController)  # no experiment: only the marking is exercised
    controller._trials_to_cache = set()
    wrapper = TrialRunnerWrapper(controller, trial_executor=None)
    trial = Trial("t", config={}, stub=True)
    _ray_compat.mark_stopped_trial_for_snapshot(wrapper, trial)
    assert controller._trials_to_cache == {trial}
    _ray_compat.mark_stopped_trial_for_snapshot(object(), trial)  # not Tune's: nothing to mark


def test_a_pending_trial_is_held_paused_off_tunes_queues() -> None:
    """`hold_pending_trial`: Tune starts every pending trial it has resources for (the scheduler's choice
    only comes first), so a restored seed waiting at a rung is moved to PAUSED through the controller's
    `_set_trial_status`, which keeps its sets of trials by status."""
    from collections import defaultdict

    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
    from ray.tune.experiment import Trial

    starts_pending = inspect.getsource(TuneController._maybe_add_actors)
    assert "Then, we handle all trials that are pending." in starts_pending
    assert _parameters(TuneController._set_trial_status) == ["self", "trial", "status"]
    controller = TuneController.__new__(TuneController)  # no experiment: only the status sets
    trial = Trial("t", config={}, stub=True)
    controller._pending_trials, controller._paused_trials = {trial}, set()
    controller._running_trials, controller._stopped_trials, controller._failed_trials = set(), set(), set()
    controller._pending_trials_list = [trial]
    controller._resources_to_pending_trials = defaultdict(set, {trial.placement_group_factory: {trial}})
    _ray_compat.hold_pending_trial(TrialRunnerWrapper(controller, trial_executor=None), trial)
    assert trial.status == Trial.PAUSED and controller._paused_trials == {trial}
    queued = controller._resources_to_pending_trials[trial.placement_group_factory]
    assert not controller._pending_trials and not queued
    loose = Trial("u", config={}, stub=True)
    _ray_compat.hold_pending_trial(object(), loose)  # not Tune's: the trial's own status
    assert loose.status == Trial.PAUSED


def test_a_restored_tuners_config_can_be_changed_in_place() -> None:
    """`restored_tune_config`: the TuneConfig a Tuner's fit uses, on its local TunerInternal."""
    from ray import tune
    from ray.tune.impl.tuner_internal import TunerInternal

    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(max_concurrent_trials=3))
    assert isinstance(tuner._local_tuner, TunerInternal) and tuner._is_ray_client is False
    config = _ray_compat.restored_tune_config(tuner)
    assert config is not None and config.max_concurrent_trials == 3
    assert "self._tune_config.max_concurrent_trials" in inspect.getsource(TunerInternal)


def test_the_experiment_state_stores_a_trials_configs_and_resources_where_resume_edits_them() -> None:
    """`stored_trial_config_keys` and `stored_resource_request`: as `Trial.get_json_state` writes a trial
    into experiment_state-*.json (the file `sweeps.record.resume` edits before a resume)."""
    from ray import cloudpickle
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory
    from ray.tune.experiment import Trial

    resources = {"CPU": 2.0}
    trial = Trial("t", config={"settings": {"a": 1}}, stub=True, placement_group_factory=resources)
    trial.create_placement_group_factory()  # as Tune does when it creates the trial
    stored = json.loads(trial.get_json_state()[0])
    for key in _ray_compat.stored_trial_config_keys():
        assert stored[key] == {"settings": {"a": 1}}
    stored_request = cloudpickle.loads(bytes.fromhex(stored["placement_group_factory"]))
    assert (
        stored_request == resource_dict_to_pg_factory(resources) != resource_dict_to_pg_factory({"CPU": 1.0})
    )
    assert cloudpickle.loads(bytes.fromhex(_ray_compat.stored_resource_request(resources))) == stored_request


def test_the_tensorboard_callbacks_hparams_hook_and_writers() -> None:
    from ray.tune.logger import TBXLoggerCallback

    assert _parameters(TBXLoggerCallback._try_log_hparams) == ["self", "trial", "result"]
    assert "self._try_log_hparams(trial, scrubbed_result)" in inspect.getsource(TBXLoggerCallback)
    assert "self._trial_writer[trial] = " in inspect.getsource(TBXLoggerCallback.log_trial_start)

    calls: list[tuple[Any, ...]] = []

    class Logger(TBXLoggerCallback):
        pass

    _ray_compat.replace_tensorboard_hparams(
        Logger, lambda callback, trial, result: calls.append((trial, result))
    )
    logger = Logger()
    logger._try_log_hparams("trial", {"acc": 1.0})
    assert calls == [("trial", {"acc": 1.0})]
    logger._trial_writer["trial"] = "writer"
    assert _ray_compat.tensorboard_trial_writer(logger, "trial") == "writer"
    with pytest.raises(TypeError):
        _ray_compat.replace_tensorboard_hparams(object, lambda *a: None)


def test_the_mlflow_callback_keeps_each_trials_run_id() -> None:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    assert "self._trial_runs[trial] = run.info.run_id" in inspect.getsource(
        MLflowLoggerCallback.log_trial_start
    )
    callback = MLflowLoggerCallback()
    callback._trial_runs = {"trial": "run-1"}
    assert _ray_compat.mlflow_trial_run_id(callback, "trial") == "run-1"


def test_the_wandb_callbacks_logging_actor_and_clean_up_hooks() -> None:
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    assert _ray_compat.wandb_logging_actor_class() is _WandbLoggingActor
    assert _parameters(_WandbLoggingActor.run) == ["self"]
    assert WandbLoggerCallback._logger_actor_cls is _WandbLoggingActor
    assert "(self._logger_actor_cls)" in inspect.getsource(WandbLoggerCallback)
    assert _parameters(WandbLoggerCallback._cleanup_logging_actors) == ["self", "timeout", "kill_on_timeout"]
    assert "self._trial_logging_futures: Dict" in inspect.getsource(WandbLoggerCallback.__init__)

    class Actor(_WandbLoggingActor):
        pass

    seen: list[tuple[list[Any], float]] = []

    class Callback(WandbLoggerCallback):
        pass

    _ray_compat.use_wandb_logging_actor(Callback, Actor)
    assert Callback._logger_actor_cls is Actor and WandbLoggerCallback._logger_actor_cls is _WandbLoggingActor
    _ray_compat.before_wandb_cleanup(
        Callback, lambda callback, futures, timeout: seen.append((futures, timeout))
    )
    callback = Callback(project="p", mode="offline")
    callback._cleanup_logging_actors(timeout=5)  # no actors: Ray's clean-up has nothing to end
    assert seen == [([], 5)]
    with pytest.raises(TypeError):
        _ray_compat.use_wandb_logging_actor(Callback, object)


def test_the_placeholder_the_analysis_refuses_is_still_tunes() -> None:
    """`analysis.config_check` reads Tune's placeholder of an unresolved `sample_from` from trial configs
    without Ray (the analysis must work without the code that wrote the files): Tune still writes it."""
    from ray.tune.impl.placeholder import _FunctionResolver

    from optsweep.analysis import config_check

    assert _FunctionResolver.TOKEN == config_check.TUNE_PLACEHOLDER


def test_the_log_lines_a_study_hides_are_still_rays() -> None:
    """`sweeps.cluster.interrupts` filters these lines of Ray's loggers: each logger's module still says
    them."""
    for logger, part in interrupts.HIDDEN_LOG_LINES.items():
        assert part in inspect.getsource(importlib.import_module(logger)), (logger, part)


# ----------------------------------------------------------------------------- the fence holds


def _source_files() -> Iterator[Path]:
    for folder in SOURCE_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path != FENCE and "__pycache__" not in path.parts:
                yield path


@functools.lru_cache(maxsize=1)
def _ray_source() -> str:
    import ray

    root = Path(ray.__file__).parent
    return "\n".join(path.read_text(errors="replace") for path in root.rglob("*.py"))


def _in_ray(name: str) -> bool:
    return name in _ray_source() and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", _ray_source()) is not None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and len(name) > 1


class _Names(ast.NodeVisitor):
    """The private names a module defines, and those it reads from elsewhere."""

    def __init__(self) -> None:
        self.defined: set[str] = set()
        self.used: dict[str, int] = {}  # name -> line
        self.ray_imports: dict[str, int] = {}  # private names imported from ray modules
        self.other_modules: set[str] = set()  # local names bound to modules other than Ray's
        self.imports_ray = False

    def _bind(self, node: ast.Import) -> None:
        for alias in node.names:
            local = alias.asname or alias.name.split(".")[0]
            if alias.name.split(".")[0] != "ray":
                self.other_modules.add(local)
            self.defined.add(local)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self.imports_ray |= module.split(".")[0] == "ray"
        for alias in node.names:
            if module.split(".")[0] == "ray" and _private(alias.name):
                self.ray_imports[f"{module}.{alias.name}"] = node.lineno
            self.defined.add(alias.asname or alias.name)

    def _define(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.defined.add(node.name)
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _define

    def visit_arg(self, node: ast.arg) -> None:
        self.defined.add(node.arg)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.defined.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store):
            self.defined.add(node.attr)
        elif _private(node.attr) and not self._of_other_module(node.value):
            self.used.setdefault(node.attr, node.lineno)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None and _private(node.arg):
            self.used.setdefault(node.arg, node.value.lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        reflective = isinstance(node.func, ast.Name) and node.func.id in (
            "getattr",
            "setattr",
            "hasattr",
            "delattr",
        )
        if reflective and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            name = node.args[1].value
            if isinstance(name, str) and _private(name):
                self.used.setdefault(name, node.lineno)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.imports_ray |= any(alias.name.split(".")[0] == "ray" for alias in node.names)
        self._bind(node)

    def _of_other_module(self, node: ast.expr) -> bool:
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and node.id in self.other_modules


def _parsed() -> dict[Path, _Names]:
    found = {}
    for path in _source_files():
        names = _Names()
        names.visit(ast.parse(path.read_text(), str(path)))
        found[path] = names
    return found


def test_no_ray_private_module_path_or_fenced_name_outside_the_fence() -> None:
    """Text, comments and docstrings included: `ray.<...>._<name>` and every name the fence reaches."""
    dotted = re.compile(r"\bray(?:\.[A-Za-z_]\w*)*\._[A-Za-z]\w*")
    fenced = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, _ray_compat.PRIVATE_NAMES)) + r")(?!\w)")
    found = []
    for path in _source_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in [*dotted.finditer(line), *fenced.finditer(line)]:
                found.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert not found, "Ray-private names outside sweeps/_ray_compat.py:\n" + "\n".join(found)


def test_no_other_private_name_of_rays_is_read_outside_the_fence() -> None:
    """In a module that imports Ray: a private name (`_x`: an attribute read, getattr's string, a keyword
    argument, an import from a ray module) that the project does not define itself and Ray's source does."""
    parsed = _parsed()
    defined = set().union(*(names.defined for names in parsed.values()))
    found = []
    for path, names in parsed.items():
        if not names.imports_ray:
            continue
        where = path.relative_to(REPO)
        found += [f"{where}:{line}: import of {name}" for name, line in names.ray_imports.items()]
        found += [
            f"{where}:{line}: {name}"
            for name, line in sorted(names.used.items())
            if name not in defined and _in_ray(name)
        ]
    assert not found, "Ray-private names outside sweeps/_ray_compat.py:\n" + "\n".join(found)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "optsweep" else ["optsweep", *parts])


def test_no_class_overrides_a_private_hook_of_a_ray_class_outside_the_fence() -> None:
    """A class of the project's packages with a Ray class among its bases defines no private name (method,
    class attribute, `self._x`) that the Ray classes it inherits from define: such an override is
    routed through the fence (which asserts the hook's shape above)."""
    importlib.import_module("optsweep.sweeps.runner.study")  # the layers, imported in their own order
    found = []
    for path, names in _parsed().items():
        if path.relative_to(REPO).parts[0] in ("benchmarks", "examples") or not names.imports_ray:
            continue  # scripts are checked by the other two tests; without Ray no Ray base class
        tree = ast.parse(path.read_text(), str(path))
        module = None
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            names = {
                n.name
                for n in node.body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            }
            names |= {
                t.id
                for n in node.body
                if isinstance(n, ast.Assign)
                for t in n.targets
                if isinstance(t, ast.Name)
            }
            names |= {
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
            names |= {
                n.attr
                for n in ast.walk(node)
                if isinstance(n, ast.Attribute)
                and isinstance(n.ctx, ast.Store)
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
            }
            private = {name for name in names if _private(name)}
            if not private:
                continue
            module = module or importlib.import_module(_module_name(path))
            cls = getattr(module, node.name, None)
            if not isinstance(cls, type):
                continue  # a class defined inside a function
            ray_classes = [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] == "ray"]
            for name in sorted(private):
                for base in ray_classes:
                    if name in vars(base) or re.search(rf"self\.{re.escape(name)}\b", _class_source(base)):
                        found.append(
                            f"{path.relative_to(REPO)}: {node.name}.{name} overrides {base.__qualname__}'s"
                        )
    assert not found, "Ray's private hooks overridden outside sweeps/_ray_compat.py:\n" + "\n".join(found)


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""
