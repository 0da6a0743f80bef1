"""Atomic file writes: write a temporary file in the target's directory, then `os.replace` it, so
a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it over `path`, else delete it."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Atomically create `path` with `write(tmp_path)`."""
    with _replacing(path) as tmp:
        write(tmp)


def write_text(path: Path, text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    # 10 significant digits: exact for configured values, without float noise like 0.09999999999999998.
    write_with(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.10g"))


def save_figure(path: Path, figure: Figure, dpi: int = 120) -> None:
    write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
