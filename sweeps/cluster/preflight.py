"""Checks of the machine a study starts on, made when it is prepared (before Ray starts): the storage
path can be written, the GPUs asked for are there. The spec's own rules are in `sweeps.spec`."""

from __future__ import annotations

import errno
import os
import tempfile

from optsweep.sweeps.spec import SpecError, StudySpec


def check(spec: StudySpec) -> None:
    """One-line OptsweepErrors for a machine the study cannot run on as specified."""
    if spec.gpus_per_worker > 0 and spec.address is None:
        _check_local_gpus(spec)
    if not spec.is_remote_storage:
        _check_writable(spec.storage_path)


def _check_local_gpus(spec: StudySpec) -> None:
    import torch

    needed = spec.gpus_per_worker * spec.workers_per_trial
    available = torch.cuda.device_count()
    if needed > available:
        raise SpecError(
            f"{{gpus_per_worker}} {spec.gpus_per_worker:g} x {{workers_per_trial}} {spec.workers_per_trial} "
            f"needs {needed:g} GPUs per trial, but this machine has {available}; lower them or pass "
            "{address}"
        )


def _check_writable(path: str) -> None:
    """`path`, or the nearest directory above it that exists, takes a file (nothing is left behind: a study
    that is only planned, or refused later, leaves no empty directory)."""
    path = os.path.abspath(os.path.expanduser(path))
    existing = path
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", existing)
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".optsweep-write-check-"):
            pass
    except OSError as error:
        problem = str(error.strerror or error).replace("{", "{{").replace("}", "}}")
        raise SpecError(
            f"{{storage_path}} {path} is not writable ({problem}); choose a directory you can write"
        ) from None
