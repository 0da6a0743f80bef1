"""`study.json`, the record of a study's settings: written atomically, read back with one-line errors.

A rerun compares its settings with the record to refuse mixing two studies in one directory. A record
that is truncated, empty or not a JSON object is reported in one line with the way out, instead of a
traceback on every rerun. A record left by a first run that failed before any optimizer's experiment
was created (`started` is False) holds nothing worth protecting, so a corrected command may replace it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs

from optsweep import atomic_files
from optsweep.errors import OptsweepError
from optsweep.vocabulary import STUDY_FILE

TUNER_FILE = "tuner.pkl"
"""Ray Tune's pickled Tuner in each experiment directory: its presence means the experiment started."""


class DamagedRecordError(OptsweepError):
    """study.json cannot be read; the message is one line for the user."""


def _fs(experiment_dir: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(experiment_dir)


def read(experiment_dir: str) -> dict[str, Any] | None:
    """The recorded settings, or None when there is no record yet."""
    raw = atomic_files.read_bytes_at(f"{experiment_dir}/{STUDY_FILE}")
    if raw is None:
        return None
    try:
        record = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        record = None
    if not isinstance(record, dict):
        problem = "empty" if not raw.strip() else "not a JSON object (truncated or overwritten)"
        raise DamagedRecordError(
            f"{experiment_dir}/{STUDY_FILE} is damaged ({problem}); move it aside and rerun with the study's "
            "own flags to write it again, or choose another --name"
        )
    return record


def write(experiment_dir: str, record: dict[str, Any]) -> None:
    """Write the record atomically."""
    write_file(experiment_dir, STUDY_FILE, json.dumps(record, indent=2).encode())


def write_file(experiment_dir: str, name: str, payload: bytes) -> None:
    """Write `<experiment_dir>/<name>` atomically (local: temp file + rename; object stores replace whole
    objects)."""
    fs, root = _fs(experiment_dir)
    fs.create_dir(root, recursive=True)
    if not isinstance(fs, pyarrow.fs.LocalFileSystem):
        with fs.open_output_stream(f"{root}/{name}") as f:
            f.write(payload)
        return
    atomic_files.write_bytes(Path(root) / name, payload, durable=True)


def started(experiment_dir: str) -> bool:
    """Whether any optimizer's Tune experiment was created here (a `tuner.pkl` one level down)."""
    fs, root = _fs(experiment_dir)
    try:
        children = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError:
        return True  # cannot tell: protect the record
    return any(
        child.type == pyarrow.fs.FileType.Directory
        and fs.get_file_info(f"{child.path}/{TUNER_FILE}").type == pyarrow.fs.FileType.File
        for child in children
    )
