"""optsweep.catalog names the built-ins without importing torch (for --help and the spec's checks); the
registries that build them must hold the same names, in the same order."""

from __future__ import annotations

from optsweep import catalog, optimizers
from optsweep.optimizers import schedules
from optsweep.sweeps import spec
from optsweep.sweeps.search import spaces
from optsweep.trainables import builtin_tasks, config, data, models


def test_the_catalog_names_what_the_registries_build() -> None:
    assert tuple(optimizers.names()) == catalog.OPTIMIZERS
    assert tuple(schedules.names()) == catalog.SCHEDULES
    assert tuple(builtin_tasks.names()) == catalog.TASKS
    assert tuple(data.dataset_names()) == catalog.DATASET_TASKS
    assert tuple(models.model_names()) == catalog.MODELS
    assert catalog.MODES == config.MODES == tuple(catalog.MIN_WORKERS)


def test_the_default_schedules_are_built_in_ones_defined_once() -> None:
    assert spaces.SCHEDULES is spec.DEFAULT_SCHEDULES
    assert set(spec.DEFAULT_SCHEDULES) <= set(catalog.SCHEDULES)
