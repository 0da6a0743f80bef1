"""Shared test fixtures: one local Ray per test session (starting Ray costs seconds on 2 cores)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests import helper modules that sit beside them (optimizer_cases, analysis_fixtures).
sys.path.insert(0, str(Path(__file__).parent))


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
_PROCESS_HANDLERS = {signum: signal.getsignal(signum) for signum in _SIGNALS}


@pytest.fixture(autouse=True)
def pristine_signal_handlers() -> None:
    """Ray Tune installs its own SIGINT/SIGUSR1 handlers in every in-process run and never takes them back
    (ray/tune/tune.py, _setup_signal_catching), also from module fixtures: each test starts with the
    process's own handlers."""
    for signum, handler in _PROCESS_HANDLERS.items():
        if handler is not None:
            signal.signal(signum, handler)


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests drop marker files that make trial workers crash (trainables.faults); Ray's workers
    inherit the variable because it is set before Ray starts."""
    from optsweep.trainables import faults

    directory = tmp_path_factory.mktemp("faults")
    os.environ[faults.ENV] = str(directory)
    return directory


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory, fault_dir: Path) -> Iterator[None]:
    """A real local Ray with 2 CPUs, shared by every test that needs one; dashboard off."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    try:
        yield
    finally:
        ray.shutdown()
