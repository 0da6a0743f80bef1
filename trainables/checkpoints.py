"""Training checkpoints that are written atomically and never loaded unverified.

A checkpoint is a directory. Rank 0 writes `state.pt` (model, optimizer, schedule, epoch, ...) and every
rank writes `rng_rank<r>.pt` (its random-number generator states); each file gets a `<file>.sha256`
digest written after it. Every file is written atomically (`optsweep.atomic_files`: a temporary name in
the same directory, then `os.replace`), so a crash leaves either the old file or the new one, never half
of one; a file whose digest is missing or wrong is refused (`CorruptCheckpointError`), since `torch.load`
can read a corrupted file without noticing. Everything is loaded with `weights_only=True`: state dicts,
tensors and plain types only.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optsweep import atomic_files

STATE_FILE = "state.pt"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, altered, or holds more than tensors and plain types."""


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def save_tensor_file(path: Path, obj: Any, *, durable: bool = True) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    atomic_files.write_bytes(path, payload, durable=durable)
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_files.write_bytes(path.with_name(path.name + ".sha256"), digest, durable=durable)


def load_tensor_file(path: Path) -> Any:
    """Load a file written by `save_tensor_file`, after checking its digest."""
    digest_path = path.with_name(path.name + ".sha256")
    try:
        payload = path.read_bytes()
        expected = digest_path.read_text().strip()
    except OSError as error:
        raise CorruptCheckpointError(f"{path}: cannot read it or its digest ({error})") from error
    if hashlib.sha256(payload).hexdigest() != expected:
        raise CorruptCheckpointError(
            f"{path}: content does not match its sha256 digest (truncated or altered)"
        )
    try:
        return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as error:  # weights_only refuses pickles that would run code (a planted file)
        raise CorruptCheckpointError(
            f"{path}: refused, it is not plain tensors and state dicts ({type(error).__name__}); "
            "planted or written by other code"
        ) from error


def save(
    directory: str | os.PathLike[str],
    state: dict[str, Any] | None,
    rank: int,
    *,
    durable: bool = True,
) -> None:
    """Write this rank's part of a checkpoint into `directory`.

    `state` (rank 0 only) is the training state; every rank adds its RNG states. `durable=False` skips
    the fsyncs: for a staging directory that Ray copies to storage (the copy is what must survive), they
    cost ~20 ms per epoch and buy nothing.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensor_file(directory / rng_file(rank), capture_rng(), durable=durable)
    if state is not None:
        save_tensor_file(directory / STATE_FILE, state, durable=durable)


def load(directory: str | os.PathLike[str], rank: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(training state, this rank's RNG states or None if the checkpoint has none for this rank)."""
    directory = Path(directory)
    state = load_tensor_file(directory / STATE_FILE)
    rng_path = directory / rng_file(rank)
    rng = load_tensor_file(rng_path) if rng_path.exists() else None
    return state, rng


def capture_rng() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": _python_rng_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_rng_to_plain(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]
