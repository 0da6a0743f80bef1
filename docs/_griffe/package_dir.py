"""A griffe extension for the API reference (mkdocs.yml): show optsweep as it is imported.

Griffe reads source files without importing them, so two things it cannot see on its own:

- setuptools' package-dir maps folders that are not below optsweep/ into the package
  (optsweep.sweeps lives in sweeps/, ...; pyproject.toml lists them). Each is found where Python's
  import system finds it (the editable install's finder, or site-packages) and attached to optsweep.
- optsweep/__init__.py re-exports lazily (a name -> module table read by __getattr__): each entry
  becomes an alias, so `::: optsweep.Study` documents what `optsweep.Study` is.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import griffe

PACKAGE = "optsweep"
LAZY_EXPORTS = "_EXPORTS"


def _mapped_subpackages() -> list[str]:
    """The optsweep.X subpackages that pyproject.toml maps from folders of their own."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    package_dir = tomllib.loads(pyproject.read_text())["tool"]["setuptools"].get("package-dir", {})
    return [name.removeprefix(f"{PACKAGE}.") for name in package_dir if name.split(".")[:-1] == [PACKAGE]]


class PackageDir(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        for name in _mapped_subpackages():
            if name in pkg.members:
                continue
            spec = importlib.util.find_spec(f"{PACKAGE}.{name}")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(f"{PACKAGE}.{name} is not importable: pip install -e . first")
            _visit_package(name, Path(next(iter(spec.submodule_search_locations))), pkg, loader)
        exports = pkg.members.get(LAZY_EXPORTS)
        if isinstance(exports, griffe.Attribute) and exports.value is not None:
            for name, module in ast.literal_eval(str(exports.value)).items():
                pkg.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=pkg))


def _visit(name: str, path: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    """One module, visited under its real parent, so that its relative imports resolve inside optsweep."""
    module = griffe.visit(
        name,
        path,
        path.read_text(encoding="utf-8"),
        parent=parent,
        extensions=loader.extensions,
        docstring_parser=loader.docstring_parser,
        docstring_options=loader.docstring_options,
        lines_collection=loader.lines_collection,
        modules_collection=loader.modules_collection,
    )
    parent.set_member(name, module)
    return module


def _visit_package(name: str, folder: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> None:
    package = _visit(name, folder / "__init__.py", parent, loader)
    for path in sorted(folder.iterdir()):
        if path.suffix == ".py" and path.name != "__init__.py":
            _visit(path.stem, path, package, loader)
        elif (path / "__init__.py").is_file():
            _visit_package(path.name, path, package, loader)
