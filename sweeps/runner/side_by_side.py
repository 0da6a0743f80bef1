"""Run callables side by side, one thread each, with one graceful stop shared by all of them.

The study runs its optimizers' Tune experiments this way (`sweeps.runner.study.execute`): every `Tuner.fit`
in its own thread of the driver, all at once, so that every optimizer's trials see the same cluster
for the same time and the cluster does not idle through each experiment's tail.

The shared graceful stop. Ray Tune (2.60) ends a `tune.run` loop gracefully (its last experiment
snapshot written, unfinished trials left PENDING/PAUSED/RUNNING in it, so `Tuner.restore` resumes
them) only when the `threading.Event` it creates as its loop begins is set; its SIGINT/SIGUSR1 handler
sets it, and Tune installs that handler in the main thread only. A fit in another thread creates its
Event too, but nothing can reach it. There is no public way to stop a fit resumably:
`Stopper.stop_all()` marks every unfinished trial TERMINATED (a resume would not continue them), and an
exception from a callback skips the last snapshot. So, while `run` runs several callables, the
function that creates that Event is wrapped (`_ray_compat.swap_fit_interrupt_event_factory`, put back
afterwards): a fit started in one of `run`'s threads hands its Event to the run's `SharedStop`, which
sets every such Event, at once and for any fit that starts later. tests/test_ray_contract.py fails if
Ray changes that function or the loop that reads its Event.

Ray Tune's module-level state is not made for fits in several threads, so `run` also, while it runs:
- gives each runner its own namespace in Tune's trainable registry (its key function is wrapped,
  `_ray_compat.swap_trainable_registry_key`): Tune registers a fit's trainable under its name (every
  optimizer's is `run_trial`) in one registry for the whole Ray job and looks it up again each time it
  starts a trial actor, so the optimizers' fits would start each other's trainables (with another
  optimizer class bound to it);
- lets one runner at a time set up, from its start until its fit's loop begins (when Tune asks for the
  Event above): `tune.with_parameters`, `Tuner(...)`/`Tuner.restore` and the start of `fit` write to
  plain dicts of Tune's registries (what waits to be flushed to the Ray job) that a concurrent flush
  would iterate or clear under another thread's feet. The loops then run together.

What stops the runners gracefully:
- SIGUSR1 (Tune's own graceful-stop signal, which `sweeps.cluster.interrupts` raises on the first Ctrl-C or
  SIGTERM): `run` listens to it in the main thread while its runners run;
- a runner that raises: the others stop gracefully, and once all have returned its exception is raised
  in the calling thread (a `BaseException` too, e.g. `KeyboardInterrupt`).
An exception in the waiting thread itself (the study's second Ctrl-C raises one there) asks the same
graceful stop and is raised at once, without waiting for the runners (they are daemon threads).

While several runners run, `sys.stdout` and `sys.stderr` pass on what each thread writes in whole
pieces (up to a newline or a flush), so that concurrent progress lines never interleave mid-line.

One callable: called in the calling thread, nothing wrapped (a single Tune fit handles signals itself).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, TextIO, TypeVar

from optsweep.sweeps import _ray_compat

T = TypeVar("T")

POLL_S = 0.2
_PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


class SharedStop:
    """The graceful stop of every Tune fit started in the threads of one `run`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[threading.Event] = []
        self._requested = False

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self) -> None:
        """Ask every fit (running or still to start) to stop after saving its experiment state."""
        with self._lock:
            self._requested = True
            events = list(self._events)
        for event in events:
            event.set()

    def register(self, event: threading.Event) -> None:
        """A fit's interrupt Event: set now if the stop was asked already, else when it is."""
        with self._lock:
            self._events.append(event)
            requested = self._requested
        if requested:
            event.set()

    @property
    def fits(self) -> int:
        """How many fits have registered (for tests)."""
        with self._lock:
            return len(self._events)


def run(
    runners: Sequence[Callable[[], T]],
    *,
    names: Sequence[str] | None = None,
    pending_trials: int | None = None,
    poll_s: float = POLL_S,
) -> list[T]:
    """Call every runner, side by side, and return their results in order (see the module docstring).

    `names` (one per runner) name the threads. Several runners: the first one to raise makes the others
    stop gracefully, then its exception is raised here once all have returned, with a note naming any
    other runner that raised. `pending_trials`: how many trials each runner's Tune fit keeps waiting for
    resources at a time (Tune's `TUNE_MAX_PENDING_TRIALS_PG`, unless set in the environment already;
    Tune's default, 200, would queue every trial of the first fit ahead of the others'). The fits'
    loops begin together, once every runner has set up; a runner that never starts a Tune fit holds
    the set-up turn until it returns.
    """
    if len(runners) <= 1:
        return [runner() for runner in runners]
    names = list(names) if names is not None else [f"runner-{i}" for i in range(len(runners))]
    if len(names) != len(runners):
        raise ValueError(f"{len(names)} names for {len(runners)} runners")
    stop = SharedStop()
    outcomes: list[tuple[bool, Any] | None] = [None] * len(runners)
    failures: list[tuple[int, BaseException]] = []
    done = threading.Semaphore(0)
    lock = threading.Lock()

    setting_up = threading.Lock()
    start = _Start(len(runners), stop)

    def work(index: int) -> None:
        runner = _Runner(stop, f"side-by-side-{index}", setting_up, start)
        _runners[threading.get_ident()] = runner
        try:
            setting_up.acquire()
            runner.setting_up = True
            outcomes[index] = (True, runners[index]())
        except BaseException as error:  # handed to the calling thread
            outcomes[index] = (False, error)
            with lock:
                failures.append((index, error))
            stop.request()
        finally:
            runner.set_up()
            _runners.pop(threading.get_ident(), None)
            done.release()

    with _tune_hooks(), _pending_trials(pending_trials), _on_sigusr1(stop.request), _whole_writes():
        threads = [
            threading.Thread(target=work, args=(i,), name=f"side-by-side-{names[i]}", daemon=True)
            for i in range(len(runners))
        ]
        try:
            # Started inside the try: a signal may arrive while the last thread is starting.
            for thread in threads:
                thread.start()
            for _ in threads:
                while not done.acquire(timeout=poll_s):
                    pass
        except BaseException:
            stop.request()  # e.g. the second Ctrl-C: stop the fits, but do not wait for them
            raise
        for thread in threads:
            thread.join()
    if failures:
        first = failures[0][1]
        for index, other in failures[1:]:
            first.add_note(f"{names[index]} also failed: {type(other).__name__}: {other}")
        raise first
    return [outcome[1] for outcome in outcomes if outcome is not None]


def stopping() -> bool:
    """Whether the graceful stop of the `run` this thread's runner belongs to was asked (False outside one):
    a runner that would start another fit after its first must not."""
    runner = _runners.get(threading.get_ident())
    return runner is not None and runner.stop.requested


def give_way() -> None:
    """Called by a runner before it waits for another runner (e.g. for the others' searches to leave the
    cluster's queue): it gives up its set-up turn and no longer holds back the others' first fits, which
    would otherwise wait for it forever. Nothing outside `run`'s threads."""
    runner = _runners.get(threading.get_ident())
    if runner is not None:
        runner.set_up()


def another_fit() -> None:
    """Called by a runner before it sets up a Tune fit after its first (e.g. the next stage of a study):
    it takes the set-up turn again, until that fit's loop begins, so that its set-up does not race the
    other runners' (see the module docstring). Nothing outside `run`'s threads."""
    runner = _runners.get(threading.get_ident())
    if runner is not None and not runner.setting_up:
        runner.take_turn()


# ------------------------------------------------------------------------------- Tune's hooks
class _Start:
    """The runners' fits begin their loops together, once every runner has set up (or ended)."""

    def __init__(self, runners: int, stop: SharedStop) -> None:
        self._waiting_for = runners
        self._ready = threading.Condition()
        self._stop = stop

    def arrive(self, *, wait: bool) -> None:
        with self._ready:
            self._waiting_for -= 1
            self._ready.notify_all()
            while wait and self._waiting_for > 0 and not self._stop.requested:
                self._ready.wait(timeout=POLL_S)


class _Runner:
    """What the Tune hooks need to know about the runner of a thread."""

    def __init__(self, stop: SharedStop, namespace: str, setting_up: threading.Lock, start: _Start) -> None:
        self.stop = stop
        self.namespace = namespace
        self.setting_up = False  # holds `_setting_up`, the run's one-runner-at-a-time set-up lock
        self._setting_up = setting_up
        self._start = start
        self._arrived = False

    def take_turn(self) -> None:
        """Hold the run's set-up lock again (released when the next fit's loop begins, or at the end)."""
        self._setting_up.acquire()
        self.setting_up = True

    def set_up(self, *, wait: bool = False) -> None:
        """Its fit's loop begins (or it ended): the next runner may set up; with `wait`, the loop waits
        for the others' (so that no optimizer's trials queue for the cluster ahead of the others')."""
        if self.setting_up:
            self.setting_up = False
            self._setting_up.release()
        if not self._arrived:
            self._arrived = True
            self._start.arrive(wait=wait)


_runners: dict[int, _Runner] = {}  # thread ident -> its runner, while `run` runs it
_hook_lock = threading.Lock()
_hook_users = 0
_originals: dict[str, Any] = {}


def _interrupt_event() -> threading.Event:
    """Tune's interrupt Event factory, wrapped: a runner's fit hands its Event to the stop."""
    event: threading.Event = _originals["event"]()
    runner = _runners.get(threading.get_ident())
    if runner is not None:
        runner.stop.register(event)
        runner.set_up(wait=True)
    return event


def _registry_key(prefix: str, category: str, key: str) -> bytes:
    """Tune's registry key function, wrapped: a runner's registrations are its own."""
    runner = _runners.get(threading.get_ident())
    if runner is not None:
        key = f"{runner.namespace}/{key}"
    return _originals["key"](prefix, category, key)  # type: ignore[no-any-return]


@contextlib.contextmanager
def _tune_hooks() -> Iterator[None]:
    global _hook_users
    with _hook_lock:
        if _hook_users == 0:
            _originals["event"] = _ray_compat.swap_fit_interrupt_event_factory(_interrupt_event)
            _originals["key"] = _ray_compat.swap_trainable_registry_key(_registry_key)
        _hook_users += 1
    try:
        yield
    finally:
        with _hook_lock:
            _hook_users -= 1
            if _hook_users == 0:
                _ray_compat.swap_fit_interrupt_event_factory(_originals.pop("event"))
                _ray_compat.swap_trainable_registry_key(_originals.pop("key"))


@contextlib.contextmanager
def _pending_trials(count: int | None) -> Iterator[None]:
    if count is None or _PENDING_ENV in os.environ:
        yield
        return
    os.environ[_PENDING_ENV] = str(max(1, count))
    try:
        yield
    finally:
        os.environ.pop(_PENDING_ENV, None)


@contextlib.contextmanager
def _on_sigusr1(request: Callable[[], None]) -> Iterator[None]:
    """SIGUSR1 asks the shared stop (main thread only: elsewhere signals are not ours to handle)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        request()

    previous = signal.signal(signal.SIGUSR1, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


# ------------------------------------------------------------------------------- whole writes
class _WholeWrites:
    """A text stream that writes each thread's text in whole pieces: what a thread writes is held until
    it ends with a newline or the thread flushes, then written to `stream` in one call, under a lock."""

    def __init__(self, stream: TextIO, lock: threading.Lock) -> None:
        self._stream = stream
        self._lock = lock
        self._pending = threading.local()

    def write(self, text: str) -> int:
        held = getattr(self._pending, "text", "") + text
        if held.endswith("\n"):
            self._pending.text = ""
            self._emit(held)
        else:
            self._pending.text = held
        return len(text)

    def flush(self) -> None:
        held = getattr(self._pending, "text", "")
        self._pending.text = ""
        if held:
            self._emit(held)
        else:
            with self._lock:
                self._stream.flush()

    def _emit(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def _whole_writes() -> Iterator[None]:
    lock = threading.Lock()  # one lock for both: stdout and stderr often share a terminal
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _WholeWrites(out, lock), _WholeWrites(err, lock)  # type: ignore[assignment]
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = out, err
