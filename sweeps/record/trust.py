"""The trust boundary of a resume: Tune's `tuner.pkl` is a pickle, and unpickling runs code.

Whoever can write to the storage path can plant a `tuner.pkl` that runs as the user who resumes. So:

- When a study creates one of its Tune experiments (its search, its confirmation), the sha256 of its
  `tuner.pkl` (Tune writes it once, at creation) is recorded outside the storage, in this user's state
  directory (0700/0600), where the storage's other writers cannot reach. A resume refuses a `tuner.pkl`
  that differs from the record (planted, replaced or damaged), and one with no record (written elsewhere:
  another machine, an older optsweep) unless the user vouches for the storage with `--trust-storage`
  (then it is recorded).
- A local experiment directory (or a directory above it) that others may write to is refused
  before anything in it is read.

What this does not cover is said in docs/security.md: Tune's other state files
(`experiment_state-*.json`, searcher state) hold pickled values too and change throughout a run, so
they are not pinned; the storage path must be writable only by people you trust.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import stat
import threading
from pathlib import Path

import pyarrow.fs

from optsweep import atomic_files
from optsweep.errors import OptsweepError
from optsweep.sweeps.record.study_record import TUNER_FILE

STATE_DIR_ENV = "OPTSWEEP_STATE_DIR"


class UntrustedExperimentError(OptsweepError):
    """A resume that would load files optsweep cannot vouch for; one line for the user."""


def state_dir() -> Path:
    """Where this user's records live: $OPTSWEEP_STATE_DIR, else $XDG_STATE_HOME/optsweep, else
    ~/.local/state/optsweep."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "optsweep"


def _record_path(experiment_dir: str) -> Path:
    key = hashlib.sha256(experiment_dir.rstrip("/").encode()).hexdigest()[:32]
    return state_dir() / "tuner-digests" / f"{key}.json"


def _tuner_digest(tune_dir: str) -> str | None:
    fs, path = pyarrow.fs.FileSystem.from_uri(f"{tune_dir.rstrip('/')}/{TUNER_FILE}")
    try:
        with fs.open_input_stream(path) as f:
            return hashlib.sha256(f.read()).hexdigest()
    except (FileNotFoundError, OSError):
        return None


def _load_record(experiment_dir: str) -> dict[str, str]:
    try:
        record = json.loads(_record_path(experiment_dir).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


_PIN_LOCK = threading.Lock()


def pin(experiment_dir: str, experiment: str) -> None:
    """Record the digest of the `tuner.pkl` this study just wrote for its Tune experiment `experiment`."""
    digest = _tuner_digest(f"{experiment_dir}/{experiment}")
    if digest is None:
        return
    path = _record_path(experiment_dir)
    with _PIN_LOCK:
        record = {**_load_record(experiment_dir), experiment: digest, "experiment": experiment_dir}
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        atomic_files.write_bytes(path, json.dumps(record, indent=2).encode(), durable=True)
        os.chmod(path, 0o600)


def check(experiment_dir: str, experiment: str, trust_storage: bool) -> None:
    """Raise UntrustedExperimentError unless the `tuner.pkl` of the study's experiment `experiment` is the
    one this study wrote."""
    tune_dir = f"{experiment_dir}/{experiment}"
    found = _tuner_digest(tune_dir)
    recorded = _load_record(experiment_dir).get(experiment)
    if found is not None and found == recorded:
        return
    if recorded is not None:
        raise UntrustedExperimentError(
            f"{tune_dir}/{TUNER_FILE} is not the file this study wrote (replaced or damaged; resuming "
            f"would unpickle it, which runs code); it was not loaded: move {tune_dir} aside to run it afresh"
        )
    if not trust_storage:
        raise UntrustedExperimentError(
            f"{tune_dir}/{TUNER_FILE} was not written by a study of this user on this machine, and resuming "
            "unpickles it (which runs code); if only people you trust can write to the storage path, rerun "
            "with --trust-storage"
        )
    pin(experiment_dir, experiment)  # vouched for once: later resumes compare against this one


def check_local_permissions(experiment_dir: str) -> None:
    """Refuse an experiment directory (or its storage root) that someone else may write to: they could
    plant what a resume loads. Sticky shared directories (/tmp) are fine: others cannot replace what
    lies in them."""
    path = Path(experiment_dir)
    for directory in (path, path.parent):
        try:
            info = directory.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & stat.S_ISVTX:
            continue
        if mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _private_group(info.st_gid, info.st_uid)):
            who = "everyone" if mode & stat.S_IWOTH else f"group {_group_name(info.st_gid)}"
            raise UntrustedExperimentError(
                f"{directory} (mode {mode:04o}) can be written by {who}, who could plant files that a resume "
                f"loads and runs; run: chmod go-w {directory} (or pass --trust-storage if you trust them all)"
            )


def _private_group(gid: int, uid: int) -> bool:
    """A user-private group (same name as the user, no other members): group-writable is harmless."""
    try:
        group = grp.getgrgid(gid)
        return group.gr_name == pwd.getpwuid(uid).pw_name and not set(group.gr_mem) - {group.gr_name}
    except KeyError:
        return False


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
