"""The package's layout: every package folder is installed, the layers import downwards only, and the
modules' paths from before sweeps/ was grouped into subpackages still import (old experiments' pickles
name them)."""

from __future__ import annotations

import ast
import importlib
import pickle
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Module paths an experiment written before the grouping may name in its tuner.pkl: old -> new.
OLD_PATHS = {
    "study": "runner.study",
    "confirmation": "runner.confirmation",
    "fusion": "runner.fusion",
    "safeguards": "runner.safeguards",
    "spaces": "search.spaces",
    "contenders": "search.contenders",
    "halving": "early_stopping.halving",
    "scheduling": "early_stopping.scheduling",
    "identity": "record.identity",
    "study_record": "record.study_record",
    "trial_identity": "record.trial_identity",
    "resume": "record.resume",
    "trust": "record.trust",
    "reproduce": "record.reproduce",
    "tracking": "monitoring.tracking",
    "tracking_callbacks": "monitoring.tracking_callbacks",
    "member_tracking": "monitoring.member_tracking",
    "progress": "monitoring.progress",
    "ray_connect": "cluster.ray_connect",
    "feasibility": "cluster.feasibility",
    "shipping": "cluster.shipping",
    "storage_guard": "cluster.storage_guard",
    "retention": "cluster.retention",
    "interrupts": "cluster.interrupts",
    "preflight": "cluster.preflight",
}


def _package_folders() -> dict[str, Path]:
    """Installed package name -> folder, for every folder with an __init__.py under a mapped folder."""
    found = {}
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(REPO / folder).parts
            found[".".join([package, *relative])] = init.parent
    return found


def test_every_package_folder_is_installed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = _package_folders()
    assert set(folders) == listed, "pyproject.toml's packages must list exactly the package folders"
    assert {"optsweep.sweeps.runner", "optsweep.sweeps.early_stopping"} <= listed


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_a_module_path_from_before_the_grouping_is_the_same_module(old: str) -> None:
    moved = importlib.import_module(f"optsweep.sweeps.{OLD_PATHS[old]}")
    assert importlib.import_module(f"optsweep.sweeps.{old}") is moved


def test_a_pickle_that_names_an_old_path_loads_the_class_at_its_new_path() -> None:
    from optsweep.sweeps.early_stopping.halving import ConfigurationHalving

    # Protocol 0, as a tuner.pkl written before the grouping names the class (by module and name).
    assert pickle.loads(b"coptsweep.sweeps.halving\nConfigurationHalving\n.") is ConfigurationHalving
    # An Optuna study's searcher holds a partial of the function that defines its space, named in study.
    define_by_run = pickle.loads(b"coptsweep.sweeps.study\n_define_by_run\n.")
    assert callable(define_by_run) and define_by_run.__module__ == "optsweep.sweeps.runner.tuner"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("optsweep.sweeps.no_such_module")


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_the_layers_import_downwards_only() -> None:
    """The runner is imported only by the doors (sweeps/'s top-level modules: the API, the command line,
    the study scripts); the subpackages it runs never import it; trainables/, analysis/ and optimizers/
    never import sweeps/ (a trial process or a report needs no driver code)."""
    offenders = []
    for package, folder in _package_folders().items():
        for path in sorted(folder.glob("*.py")):
            imported = _imported_modules(path)
            if package.startswith("optsweep.sweeps.") and package != "optsweep.sweeps.runner":
                offenders += [(path, m) for m in imported if m.startswith("optsweep.sweeps.runner")]
            if package.split(".")[1:2] in (["trainables"], ["analysis"], ["optimizers"]):
                offenders += [(path, m) for m in imported if m.startswith("optsweep.sweeps")]
    assert not offenders, offenders


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    upward = tmp_path / "upward.py"
    upward.write_text("from optsweep.sweeps.runner import study\n")
    assert "optsweep.sweeps.runner.study" in _imported_modules(upward)
