"""The analysis's writers of tables and figures, atomic (`optsweep.atomic_files`: a crash leaves the old
file or the new one, never half of one; umask permissions; a killed writer's temporary is cleaned).

`write_text`, `write_bytes` and `write_with` are the core module's, re-exported for the report writers;
`write_bytes` here is durable (fsynced), as the records written through it have always been."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from optsweep.atomic_files import write_bytes as _write_bytes
from optsweep.atomic_files import write_text, write_with

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure", "write_bytes", "write_csv", "write_text", "write_with"]


def write_bytes(path: Path, payload: bytes) -> None:
    """Atomically and durably (fsync before the rename) create `path` with `payload`."""
    _write_bytes(path, payload, durable=True)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    # 10 significant digits: exact for configured values, without float noise like 0.09999999999999998.
    write_with(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.10g"))


def save_figure(path: Path, figure: Figure, dpi: int = 120) -> None:
    write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
