"""What is trained, apart from how it is swept: a `Task` bundles the model, the data, the loss, the
metrics, the target metric with its mode, the default budget and the weight-decay rule.

The training loop runs any task; the sweeps compare optimizers on any task. A task is built by a
factory: a built-in name (`trainables.builtin_tasks`), an import path ``my_pkg.tasks:build_task`` or
a file ``path/to/my_task.py:build_task``, called with the task's arguments; or a `Task` object passed
straight to the Python API.

    task = Task(
        name="my-regression",
        model=lambda: nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1)),
        data=lambda: TaskData(train_ds, val_ds, test_ds),
        loss=nn.functional.mse_loss,
        metrics={"mse": MSE},
        target=Target("mse", "min"),
    )

Every factory is called in the process that trains (a Tune trial, each Ray Train worker) after the
seed is set, so initial weights follow the seed.

The types (`Task`, `TaskData`, `Metric`, ...) live in the leaf module `trainables.task_types` and are
re-exported here; this module resolves task references (`build_task`) and checks tasks (`check`).
torch is imported by `check`, not by importing this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import builtin_tasks
from .data import DatasetUnavailableError
from .task_types import (
    ACCURACY,
    LOSS_METRIC,
    MAE,
    MSE,
    PERPLEXITY,
    WEIGHT_DECAY_RULES,
    Metric,
    Task,
    TaskData,
    TaskError,
    param_groups,
    token_cross_entropy,
)

if TYPE_CHECKING:
    from torch import Tensor
    from torch.utils.data import Dataset

__all__ = [
    "ACCURACY",
    "LOSS_METRIC",
    "MAE",
    "MSE",
    "PERPLEXITY",
    "WEIGHT_DECAY_RULES",
    "Metric",
    "Task",
    "TaskData",
    "TaskError",
    "build_task",
    "check",
    "explicit_arguments",
    "factory_of",
    "load_reference",
    "param_groups",
    "split_reference",
    "token_cross_entropy",
]

# ------------------------------------------------------------------------------------- resolving


def split_reference(reference: str) -> tuple[str, str]:
    """``module.path:factory`` or ``file.py:factory`` -> (module or file, factory name)."""
    where, _, attribute = reference.rpartition(":")
    if not where or not attribute.isidentifier():
        raise TaskError(
            f"{reference!r} is not an import path: "
            "write 'my_pkg.module:function' or 'path/to/file.py:function'"
        )
    return where, attribute


def load_reference(reference: str, what: str) -> Any:
    """The object an import path (``my_pkg.tasks:build_task``) or a file path (``tasks.py:build_task``)
    names; a one-line TaskError when it does not resolve. Modules loaded from a file are registered so
    that Ray pickles their functions by value (workers on other nodes lack the file)."""
    where, attribute = split_reference(reference)
    module = _load_file_module(where, what) if where.endswith(".py") else _import_module(where, what)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise TaskError(f"{what} {reference!r}: {where} has no attribute {attribute!r}") from None


def _import_module(name: str, what: str) -> ModuleType:
    # As `python -m` does: the user's own packages in the directory they run from are importable, also
    # when optsweep is started as a script (whose sys.path[0] is the script's directory).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise TaskError(f"{what}: cannot import module {name!r} ({error})") from None
    except Exception as error:  # the user's module raised while being imported
        raise TaskError(f"{what}: importing {name!r} raised {type(error).__name__}: {error}") from None


def _load_file_module(path: str, what: str) -> ModuleType:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise TaskError(f"{what}: no such file {full}")
    name = "optsweep_user_" + os.path.splitext(os.path.basename(full))[0].replace("-", "_")
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None) == full:
        return module
    # As running it as a script would: modules beside the file are importable from it.
    if os.path.dirname(full) not in sys.path:
        sys.path.insert(0, os.path.dirname(full))
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise TaskError(f"{what}: cannot load {full} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise TaskError(f"{what}: running {full} raised {type(error).__name__}: {error}") from None
    _pickle_by_value(module)
    return module


def _pickle_by_value(module: ModuleType) -> None:
    try:
        from ray import cloudpickle
    except ImportError:  # trainables without Ray (a plain process) need no pickling
        return
    cloudpickle.register_pickle_by_value(module)


def build_task(spec: str, args: Mapping[str, Any] | None = None, *, data_dir: str | None = None) -> Task:
    """Build the task `spec` (a built-in name, ``pkg.module:factory`` or ``file.py:factory``) with `args`.

    `data_dir` is passed to factories that take a ``data_dir`` argument when `args` does not set it.
    """
    args = dict(args or {})
    factory = factory_of(spec)
    if isinstance(factory, Task):
        if args:
            raise TaskError(
                f"task {spec!r} is a Task object, not a factory: it takes no arguments ({', '.join(args)})"
            )
        return factory
    if not callable(factory):
        raise TaskError(f"task {spec!r} is neither a Task nor a function returning one: {factory!r}")
    parameters = _parameters(factory)
    if data_dir is not None and "data_dir" in parameters and "data_dir" not in args:
        args["data_dir"] = data_dir
    _check_arguments(spec, parameters, args)
    try:
        task = factory(**args)
    except TaskError:
        raise
    except Exception as error:
        raise TaskError(f"task {spec!r}: its factory raised {type(error).__name__}: {error}") from None
    if not isinstance(task, Task):
        raise TaskError(f"task {spec!r}: its factory returned {type(task).__name__}, not an optsweep Task")
    return task


def factory_of(spec: str) -> Any:
    """What `spec` names: a built-in task's factory, or the object at an import path."""
    if ":" in spec:
        return load_reference(spec, "--task")
    if spec in builtin_tasks.TASKS:
        return builtin_tasks.TASKS[spec]
    raise TaskError(
        f"unknown task {spec!r}; built-in tasks: {', '.join(builtin_tasks.TASKS)} "
        "(or an import path 'my_pkg.tasks:build_task' / 'path/to/my_task.py:build_task')"
    )


def explicit_arguments(spec: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """`args` without those equal to the factory's defaults (and without `data_dir`, a machine's
    setting): two spellings of the same task compare equal."""
    parameters = _parameters(factory_of(spec)) or {}
    return {
        key: value
        for key, value in args.items()
        if key != "data_dir" and not (key in parameters and parameters[key].default == value)
    }


def _parameters(factory: Callable[..., Any]) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None


def _check_arguments(
    spec: str, parameters: Mapping[str, inspect.Parameter] | None, args: Mapping[str, Any]
) -> None:
    if parameters is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise TaskError(
            f"task {spec!r} takes no argument {', '.join(repr(u) for u in unknown)}; "
            f"its arguments: {', '.join(accepted) or 'none'}"
        )


# ------------------------------------------------------------------------------------- checking


def check(task: Task, batch: int = 2) -> None:
    """Fail early, with one line, where a task does not fit together: its data or model factory
    raises, the model's output does not fit the loss, the loss is not a finite scalar, a metric
    fails on the output. Costs one forward/backward pass of `batch` examples on the CPU."""
    import torch
    from torch import Tensor, nn

    try:
        data = task.data()
    except (TaskError, DatasetUnavailableError):
        raise
    except Exception as error:
        raise TaskError(
            f"task {task.name!r}: building its data raised {type(error).__name__}: {error}"
        ) from None
    if not isinstance(data, TaskData):
        raise TaskError(f"task {task.name!r}: data() returned {type(data).__name__}, not a TaskData")
    for split in ("train", "val", "test"):
        dataset = getattr(data, split)
        if dataset is None and split == "test":
            continue
        try:
            size = len(dataset)
        except TypeError:
            raise TaskError(
                f"task {task.name!r}: the {split} split has no len(): use a map-style Dataset"
            ) from None
        if size < 1:
            raise TaskError(f"task {task.name!r}: the {split} split is empty")
    try:
        model = task.model()
    except Exception as error:
        raise TaskError(
            f"task {task.name!r}: building its model raised {type(error).__name__}: {error}"
        ) from None
    if not isinstance(model, nn.Module):
        raise TaskError(f"task {task.name!r}: model() returned {type(model).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in model.parameters()):
        raise TaskError(f"task {task.name!r}: its model has no trainable parameters")
    inputs, targets = _first_examples(task, data.train, batch)
    try:
        outputs = model(inputs)
    except Exception as error:
        raise TaskError(
            f"task {task.name!r}: the model fails on a batch of inputs of shape {_shape(inputs)}: "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from None
    try:
        with warnings.catch_warnings():
            # torch's regression losses only warn, then broadcast, when the shapes differ: outputs (B, 1)
            # against targets (B,) would train on a (B, B) error matrix.
            warnings.filterwarnings("error", message="Using a target size", category=UserWarning)
            loss = task.loss(outputs, targets)
    except Exception as error:
        raise TaskError(
            f"task {task.name!r}: the model's output (shape {_shape(outputs)}) does not fit the loss "
            f"with targets of shape {_shape(targets)}: {type(error).__name__}: {_first_line(error)}"
        ) from None
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TaskError(f"task {task.name!r}: the loss must return a scalar tensor, got {_shape(loss)}")
    if not torch.isfinite(loss).all():
        raise TaskError(
            f"task {task.name!r}: the loss is not finite ({float(loss.detach())}) on the first examples"
        )
    try:
        loss.backward()
    except RuntimeError as error:
        raise TaskError(
            f"task {task.name!r}: no gradient flows from the loss to the model: {_first_line(error)}"
        ) from None
    for name, metric in task.metrics.items():
        try:
            values = metric.values(outputs.detach(), targets)
            metric.report(float(values.float().mean()))
        except Exception as error:
            raise TaskError(
                f"task {task.name!r}: metric {name!r} fails on the model's output (shape {_shape(outputs)}): "
                f"{type(error).__name__}: {_first_line(error)}"
            ) from None
        _check_metric_shape(task, name, values, targets)


def _check_metric_shape(task: Task, name: str, values: Tensor, targets: Tensor) -> None:
    """A metric's values are averaged over a split: one per example (B,), or one per target element
    (targets' shape, or flat). Anything else, e.g. (B, 2) per-class scores or an already-averaged
    scalar, would be averaged into a plausible-looking number that means something else."""
    examples = len(targets)
    allowed = {(examples,), tuple(targets.shape), (targets.numel(),)}
    if tuple(values.shape) not in allowed:
        raise TaskError(
            f"task {task.name!r}: metric {name!r} must return one value per example or per target element "
            f"(shape {' or '.join(str(shape) for shape in sorted(allowed))} for targets of shape "
            f"{_shape(targets)}), got shape {_shape(values)}"
        )


def _first_examples(task: Task, dataset: Dataset, batch: int) -> tuple[Any, Any]:
    import torch

    try:
        items = [dataset[i] for i in range(min(batch, len(dataset)))]  # type: ignore[arg-type]
        inputs = torch.stack([torch.as_tensor(item[0]) for item in items])
        targets = torch.stack([torch.as_tensor(item[1]) for item in items])
    except Exception as error:
        raise TaskError(
            f"task {task.name!r}: its training examples are not (inputs, target) pairs of tensors: "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from None
    return inputs, targets


def _shape(value: Any) -> str:
    from torch import Tensor

    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
