"""Atomic file writes, the project's one implementation: write a temporary file in the target's directory,
then `os.replace` it, so a crash leaves either the old file or the new one, never half of one.

- The file gets the permissions an ordinary `open` would give it (the umask's, not mkstemp's 0600).
- A temporary file that a killed writer left behind is removed by the next write of the same target.
- `durable=True` also fsyncs the file before the rename (for files that must survive a power cut).
- `write_bytes_at`, `write_text_at`, `read_bytes_at` and `read_text_at` take a location that may be a
  storage URI (``s3://``, ``gs://``, ``file://``) or a local path; an object store puts an object whole,
  so it needs no rename.

Standard library only (pyarrow is imported only for a non-local URI), so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

STALE_AFTER_S = 60.0
"""A temporary file this old is a killed writer's leftover, not another writer's work in progress."""

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def write_with(path: str | os.PathLike[str], write: Callable[[Path], None], *, durable: bool = False) -> None:
    """Atomically create `path` with `write(tmp_path)`, which writes the whole content to `tmp_path` (a
    file in `path`'s directory with `path`'s suffix, so that writers inferring a format from it work)."""
    with _replacing(Path(path), durable=durable) as tmp:
        write(tmp)


def write_bytes(path: str | os.PathLike[str], payload: bytes, *, durable: bool = False) -> None:
    write_with(path, lambda tmp: tmp.write_bytes(payload), durable=durable)


def write_text(path: str | os.PathLike[str], text: str, *, durable: bool = False) -> None:
    write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def write_bytes_at(location: str, payload: bytes, *, durable: bool = False) -> None:
    """Atomically write `payload` to `location`: a local path or ``file://`` URI by rename (as
    `write_bytes`), any other storage URI (``s3://bucket/key``, ``gs://...``) as one whole object."""
    local = _local_path(location)
    if local is not None:
        write_bytes(local, payload, durable=durable)
        return
    fs, path = _filesystem(location)
    with fs.open_output_stream(path) as f:
        f.write(payload)


def write_text_at(location: str, text: str, *, durable: bool = False) -> None:
    """`write_bytes_at` of `text` in UTF-8."""
    write_bytes_at(location, text.encode("utf-8"), durable=durable)


def read_bytes_at(location: str) -> bytes | None:
    """The bytes of the file at `location` (a local path or storage URI), or None if there is no file
    there."""
    local = _local_path(location)
    if local is not None:
        try:
            return local.read_bytes() if local.is_file() else None
        except FileNotFoundError:  # removed between the check and the read
            return None
    import pyarrow.fs

    fs, path = _filesystem(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return bytes(f.read())


def read_text_at(location: str) -> str | None:
    """`read_bytes_at` decoded as UTF-8."""
    raw = read_bytes_at(location)
    return None if raw is None else raw.decode("utf-8")


def remove_stale_temporaries(path: str | os.PathLike[str]) -> None:
    """Remove the temporaries of `path` that killed writers left (older than STALE_AFTER_S)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}{re.escape(_suffix(path))}")
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


@contextlib.contextmanager
def _replacing(path: Path, *, durable: bool) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it over `path`, else delete it."""
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_suffix(path))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _suffix(path: Path) -> str:
    return path.suffix or ".tmp"


def _local_path(location: str) -> Path | None:
    """The local path a location names (a plain path or a ``file://`` URI), None for any other URI."""
    if not _URI.match(location):
        return Path(location)
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme.lower() != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URI {location!r} names host {parsed.netloc!r}; allowed: file:///absolute/path"
        )
    return Path(urllib.request.url2pathname(parsed.path))


def _filesystem(location: str) -> tuple[Any, str]:
    """(a pyarrow FileSystem, the path in it); pyarrow is imported here only."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location)
