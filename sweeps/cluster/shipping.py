"""Getting the user's code (their task, model, optimizer) to the Ray workers that run the trials.

- A task or optimizer loaded from a file (``path/to/my_task.py:build_task``) is pickled by value:
  its functions and classes travel with the trial, to any node (`trainables.tasks`).
- A module imported by name from a local source tree (not an installed package) ships with the job as
  Ray's ``runtime_env`` ``py_modules`` when the study starts or joins Ray, so workers on every node
  can import it; when Ray was already started by the caller (a notebook, a test), it is pickled by value.
- Installed packages are expected on every node (install them in the cluster's image or setup commands).
"""

from __future__ import annotations

import importlib.util
import os
import site
import sys
import sysconfig
from typing import Any

from optsweep.trainables.tasks import Task


def user_code_paths(references: list[str], task: Task) -> list[str]:
    """Directories (packages) or .py files (top-level modules) of the user's by-name imports that are not
    installed packages: what the workers must receive."""
    modules = {reference.rpartition(":")[0] for reference in references if ":" in reference}
    modules |= {getattr(fn, "__module__", None) or "" for fn in (task.model, task.data, task.loss)}
    paths: list[str] = []
    for module in sorted(modules):
        if not module or module.endswith(".py") or module == "__main__":
            continue  # files and the user's script are pickled by value
        path = _source_root(module.split(".")[0])
        if path is not None and path not in paths:
            paths.append(path)
    return paths


def runtime_env(paths: list[str]) -> dict[str, Any]:
    """`ray.init` keyword arguments that ship `paths` with the job (nothing when there is nothing)."""
    return {"runtime_env": {"py_modules": list(paths)}} if paths else {}


def pickle_by_value(paths: list[str]) -> None:
    """For a Ray started by someone else: send the modules at `paths` by value instead."""
    from ray import cloudpickle

    for path in paths:
        name = os.path.basename(path).removesuffix(".py")
        if name in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[name])


def _source_root(top_level: str) -> str | None:
    """The local directory (a package) or file (a module) of `top_level`, or None when it is installed,
    part of Python, or one of optsweep's own layers (installed with the project on every node)."""
    if top_level in sys.builtin_module_names or top_level in _OWN_PACKAGES:
        return None
    try:
        spec = importlib.util.find_spec(top_level)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        location = os.path.abspath(next(iter(spec.submodule_search_locations)))
    elif spec.origin and spec.origin.endswith(".py"):
        location = os.path.abspath(spec.origin)
    else:
        return None
    return None if _installed(location) else location


_OWN_PACKAGES = {"optsweep"}


def _installed(path: str) -> bool:
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return any(os.path.commonpath([path, os.path.abspath(root)]) == os.path.abspath(root) for root in roots)
