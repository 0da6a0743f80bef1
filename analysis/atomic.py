"""Atomic file writes: write a temporary file in the target's directory, then `os.replace` it, so
a crash leaves either the old file or the new one, never half of one.

The file gets the permissions an ordinary `open` would give it (the umask's, not mkstemp's 0600), and
a temporary file that a killed writer left behind is removed by the next write of the same target."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it over `path`, else delete it."""
    suffix = path.suffix or ".tmp"
    remove_stale_temporaries(path, suffix)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


STALE_AFTER_S = 60.0
"""A temporary file this old is a killed writer's leftover, not another writer's work in progress."""


def remove_stale_temporaries(path: Path, suffix: str) -> None:
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}{re.escape(suffix)}")
    with contextlib.suppress(OSError):
        for candidate in path.parent.iterdir():
            if pattern.fullmatch(candidate.name) and time.time() - candidate.stat().st_mtime > STALE_AFTER_S:
                candidate.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask would, briefly, for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Atomically create `path` with `write(tmp_path)`."""
    with _replacing(path) as tmp:
        write(tmp)


def write_text(path: Path, text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: Path, payload: bytes) -> None:
    """Atomically and durably (fsync before the rename) create `path` with `payload`."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())

    write_with(path, write)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    # 10 significant digits: exact for configured values, without float noise like 0.09999999999999998.
    write_with(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.10g"))


def save_figure(path: Path, figure: Figure, dpi: int = 120) -> None:
    write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
