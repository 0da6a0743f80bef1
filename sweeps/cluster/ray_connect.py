"""Connect the study to Ray: a checked `--address`, a local Ray that says what it is, a private token.

- `--address` (or `RAY_ADDRESS`, which `ray.init` would otherwise follow silently) is checked before
  Ray is called: a malformed value or one where nothing listens is one line, not minutes of retries.
- The driver always says which cluster it joined or started; a local Ray listens on loopback only.
- Ray 2.60 protects a local cluster with a token in `~/.ray/auth_token` but writes that file readable
  by everyone on the machine; optsweep creates it 0600 and warns when it is readable by others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optsweep.errors import OptsweepError
from optsweep.sweeps import _ray_compat

ADDRESS_ENV = "RAY_ADDRESS"
CONNECT_TIMEOUT_S = 5.0
_HOST_PORT = re.compile(r"^(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


class ConnectError(OptsweepError):
    """The Ray cluster to join is malformed or unreachable; the message is one line for the user."""


def token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


def resolve_address(flag_value: str | None) -> tuple[str | None, str]:
    """(address to join or None for a local Ray, where it came from) after checking it."""
    if flag_value is not None:
        source = "--address"
        address = flag_value
    elif os.environ.get(ADDRESS_ENV):
        source = ADDRESS_ENV
        address = os.environ[ADDRESS_ENV]
    else:
        return None, "local"
    check_address(address, source)
    return address, source


def check_address(address: str, source: str = "--address") -> None:
    """Raise ConnectError unless `address` is 'auto' or host:port (optionally ray://) that answers."""
    if address == "auto":
        return
    match = _HOST_PORT.match(address.strip())
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ConnectError(
            f"{source} {address!r} is invalid: give host:port of the head node (e.g. 10.0.0.5:6379), "
            "ray://host:10001, or auto"
        )
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        instead = f"unset {ADDRESS_ENV}" if source == ADDRESS_ENV else "drop --address"
        raise ConnectError(
            f"{source} {address}: no Ray cluster answers there ({reason}); start it (`ray up cluster.yaml` "
            f"or `ray start --head`) or {instead} for a local run. Nothing ran."
        ) from None


def ensure_private_token() -> None:
    """Create ~/.ray/auth_token readable by its owner only if Ray would create it; warn when an
    existing one is readable by others (they could run code on any cluster it opens)."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = token_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            print(
                f"Warning: {path} (mode {mode:04o}) is readable by other users, who could use it to run "
                f"code on your Ray clusters; run: chmod 600 {path}",
                file=sys.stderr,
                flush=True,
            )
        return
    with os.fdopen(fd, "w") as f:
        f.write(_ray_compat.new_auth_token())


def connect(address: str | None, source: str, **init_kwargs: Any) -> str:
    """Join `address` or start a local Ray (dashboard off); returns one line
    saying which cluster this is. ConnectError when the cluster cannot be joined."""
    import ray

    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, **init_kwargs}
    ensure_private_token()
    if address is not None:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, TimeoutError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConnectError(
                f"{source} {address}: cannot join the Ray cluster ({first}). Nothing ran."
            ) from None
        return f"Ray: joined the cluster at {address} (from {source}): {_size()}"
    # Local: the dashboard stays off and every Ray server listens on loopback only (anyone who reaches
    # a Ray port can run code).
    with _loopback_only():
        ray.init(include_dashboard=False, **quiet)
    return f"Ray: started a local Ray on this machine (loopback only): {_size()}"


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Start a local Ray whose node address is 127.0.0.1, so that its GCS, raylet and worker servers
    bind to loopback (Ray 2.60 binds them to every interface otherwise and has no setting for it).

    This is what `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` does, which Ray reads once, at import: the
    driver's copy of it is set for the start only, the processes started meanwhile get the variable.
    """
    saved_env = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    saved_flag = _ray_compat.swap_cluster_binding_flag(False)
    try:
        yield
    finally:
        _ray_compat.swap_cluster_binding_flag(saved_flag)
        if saved_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved_env


def _size() -> str:
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    total = ray.cluster_resources()
    return f"{len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"
