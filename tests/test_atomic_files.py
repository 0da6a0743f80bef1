"""optsweep.atomic_files, the one atomic writer: a failed write leaves the old file and no temporary, files
get the umask's permissions, killed writers' temporaries are cleaned, `durable` fsyncs, and locations
(local paths, file:// and object-store URIs) round-trip."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs
import pytest

from optsweep import atomic_files


class Crash(Exception):
    pass


def test_a_crash_inside_the_callback_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    atomic_files.write_text(target, "old")

    def half_write(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise Crash

    with pytest.raises(Crash):
        atomic_files.write_with(target, half_write)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_killed_writer_leaves_the_old_file(tmp_path: Path) -> None:
    """A process killed mid-write (no Python clean-up runs) leaves the old content whole."""
    target = tmp_path / "state.json"
    atomic_files.write_text(target, "old")
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from optsweep import atomic_files\n"
        "def die(tmp):\n"
        "    tmp.write_text('half')\n"
        "    os._exit(3)\n"
        "atomic_files.write_with(Path(sys.argv[1]), die)\n"
    )
    assert subprocess.run([sys.executable, "-c", script, str(target)], timeout=60).returncode == 3
    assert target.read_text() == "old"
    (leftover,) = [p for p in tmp_path.iterdir() if p != target]
    assert leftover.name.startswith(".state.json.") and leftover.read_text() == "half"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_files.write_bytes(tmp_path / "a.bin", b"x")
        atomic_files.write_text_at(str(tmp_path / "b.txt"), "x")
    finally:
        os.umask(old)
    for name in ("a.bin", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_stale_temporary_is_removed_and_a_fresh_one_kept(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    stale = tmp_path / ".state.pt.abcd1234.pt"  # what a writer killed an hour ago left
    stale.write_bytes(b"")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    fresh = tmp_path / ".state.pt.efgh5678.pt"  # another writer's, in progress
    fresh.write_bytes(b"")
    other = tmp_path / ".other.pt.abcd1234.pt"  # another target's: not ours to clean
    other.write_bytes(b"")
    os.utime(other, (hour_ago, hour_ago))
    atomic_files.write_bytes(target, b"new")
    assert not stale.exists() and fresh.exists() and other.exists()
    assert target.read_bytes() == b"new"


def test_a_suffixless_files_stale_temporary_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".LOCK.abcd1234.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    atomic_files.write_text(tmp_path / "LOCK", "1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK"]


@pytest.mark.parametrize("durable", [True, False])
def test_durable_writes_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    atomic_files.write_bytes(tmp_path / "a", b"1", durable=durable)
    atomic_files.write_text(tmp_path / "b", "2", durable=durable)
    atomic_files.write_with(tmp_path / "c", lambda tmp: tmp.write_text("3"), durable=durable)
    atomic_files.write_text_at((tmp_path / "d").as_uri(), "4", durable=durable)
    assert len(synced) == (4 if durable else 0)
    assert [(tmp_path / n).read_text() for n in "abcd"] == ["1", "2", "3", "4"]


@pytest.mark.parametrize("form", ["path", "uri"])
def test_a_local_location_round_trips(tmp_path: Path, form: str) -> None:
    file = tmp_path / "dir with space" / "halving-état.json"
    file.parent.mkdir()
    location = str(file) if form == "path" else file.as_uri()
    assert atomic_files.read_text_at(location) is None
    atomic_files.write_text_at(location, '{"rungs": [1, 3]} é')
    assert file.read_text(encoding="utf-8") == '{"rungs": [1, 3]} é'
    assert atomic_files.read_text_at(location) == '{"rungs": [1, 3]} é'
    atomic_files.write_text_at(location, "second")
    assert atomic_files.read_text_at(location) == "second"
    assert sorted(p.name for p in file.parent.iterdir()) == [file.name]
    assert atomic_files.read_text_at(str(tmp_path)) is None  # a directory is not a file


def test_a_file_uri_on_another_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"names host 'server'; allowed: file:///absolute/path"):
        atomic_files.write_text_at("file://server/share/x.json", "x")


def test_an_object_store_location_is_written_whole_through_pyarrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An s3:// location goes to the filesystem pyarrow resolves for it (here a local directory standing
    in for the bucket), written as one object and read back; an absent object reads as None."""
    bucket = pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())
    asked: list[str] = []

    def from_uri(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
        asked.append(uri)
        return bucket, uri.removeprefix("s3://")

    class Resolver:  # stands in for pyarrow.fs.FileSystem, whose from_uri cannot be patched (a C type)
        pass

    Resolver.from_uri = staticmethod(from_uri)  # type: ignore[attr-defined]
    monkeypatch.setattr(pyarrow.fs, "FileSystem", Resolver)
    (tmp_path / "bucket").mkdir()
    assert atomic_files.read_text_at("s3://bucket/halving.json") is None
    atomic_files.write_text_at("s3://bucket/halving.json", "é state")
    assert (tmp_path / "bucket" / "halving.json").read_text(encoding="utf-8") == "é state"
    assert atomic_files.read_text_at("s3://bucket/halving.json") == "é state"
    atomic_files.write_bytes_at("s3://bucket/raw", b"\x00\x01")
    assert (tmp_path / "bucket" / "raw").read_bytes() == b"\x00\x01"
    assert asked[0] == "s3://bucket/halving.json"
    assert sorted(p.name for p in (tmp_path / "bucket").iterdir()) == ["halving.json", "raw"]


def test_the_core_module_needs_neither_pandas_nor_torch_nor_pyarrow() -> None:
    code = (
        "import sys, optsweep.atomic_files\n"
        "print(sorted(m for m in ('pandas', 'torch', 'pyarrow', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
