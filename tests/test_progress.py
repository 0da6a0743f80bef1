"""The live progress line: counts by status, best so far with its configuration, elapsed time and ETA,
plain lines without repeats off a terminal, in-place redraws on one."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from optsweep.sweeps.monitoring.progress import ProgressLine
from optsweep.vocabulary import Target


@dataclass
class _Trial:
    trial_id: str
    status: str
    last_result: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _adam(index: int, lr: float, seed: int = 0) -> dict[str, Any]:
    return {"optimizer": "adam", "__configuration": index, "seed": seed, "lr": lr, "schedule": "cosine"}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trials() -> list[_Trial]:
    return [
        _Trial("t_00000", "TERMINATED", {"epoch": 4, "best_val_acc": 0.91}, _adam(0, 1e-3)),
        _Trial("t_00001", "TERMINATED", {"epoch": 1, "best_val_acc": 0.5}, _adam(0, 1e-3, seed=1)),
        _Trial("t_00002", "TERMINATED", {"epoch": 1, "best_val_acc": 0.2, "diverged": True}, _adam(1, 3.0)),
        _Trial("t_00003", "ERROR", {"epoch": 2, "best_val_acc": 0.4}, _adam(2, 1e-2)),
        _Trial("t_00004", "RUNNING", {"epoch": 2, "best_val_acc": 0.95}, _adam(3, 3e-3)),
        _Trial("t_00005", "PENDING", {}, _adam(3, 3e-3, seed=1)),
    ]


def test_counts_best_configuration_elapsed_and_eta() -> None:
    clock, out = _Clock(), io.StringIO()
    progress = ProgressLine("adam", total=10, max_epochs=4, position=(2, 3), stream=out, clock=clock)
    progress.on_step_end(0, [])  # the optimizer's clock starts
    clock.now += 100.0
    progress.on_experiment_end(_trials())
    # 4 trials done in 100 s: 6 left (150 s); the other optimizers run at the same time, at their own rate.
    assert out.getvalue().splitlines()[-1] == (
        "[adam 2/3] 4/10 done (1 completed, 1 stopped, 1 diverged, 1 errors), 1 running, 5 pending; "
        "best val_acc 0.9500 (adam-c04 seed 0: lr=0.003, schedule=cosine); 1m40s, ETA 2m30s"
    )


def test_a_min_target_picks_the_lowest_and_no_eta_before_a_trial_ends() -> None:
    out = io.StringIO()
    trials = [
        _Trial("t_00000", "RUNNING", {"epoch": 1, "best_val_perplexity": 40.0}, _adam(0, 1e-3)),
        _Trial("t_00001", "RUNNING", {"epoch": 1, "best_val_perplexity": 12.5}, _adam(1, 1e-2)),
    ]
    progress = ProgressLine("adam", total=2, target=Target("perplexity", "min"), stream=out, clock=_Clock())
    progress.on_experiment_end(trials)
    assert out.getvalue() == (
        "[adam] 0/2 done (0 completed), 2 running, 0 pending; best val_perplexity 12.5000 "
        "(adam-c02 seed 0: lr=0.01, schedule=cosine); 0s, ETA unknown until a trial finishes\n"
    )


def test_plain_lines_only_when_something_changed() -> None:
    clock, out = _Clock(), io.StringIO()
    progress = ProgressLine("sgd", total=2, interval_s=0.0, heartbeat_s=1e9, stream=out, clock=clock)
    config = {"optimizer": "sgd", "lr": 0.1}
    trials = [_Trial("t_00000", "RUNNING", config=config), _Trial("t_00001", "PENDING", config=config)]
    for _ in range(5):
        clock.now += 7.0  # the elapsed time alone changing is no news
        progress.on_step_end(0, trials)
    trials[0].status = "TERMINATED"
    progress.on_step_end(0, trials)
    lines = out.getvalue().splitlines()
    assert [line.split("; ")[0] for line in lines] == [
        "[sgd] 0/2 done (0 completed), 1 running, 1 pending",
        "[sgd] 1/2 done (1 completed), 0 running, 1 pending",
    ]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    clock, out = _Clock(), _Terminal()
    progress = ProgressLine("sgd", total=1, stream=out, clock=clock)
    trials = [_Trial("t_00000", "RUNNING", config={"optimizer": "sgd", "lr": 0.1})]
    for _ in range(3):
        clock.now += 2.0
        progress.on_step_end(0, trials)
    trials[0].status = "TERMINATED"
    progress.on_experiment_end(trials)
    text = out.getvalue()
    assert text.count("\r\033[K") == 4 and text.count("\n") == 1 and text.endswith("\n")
    assert text.rsplit("\r\033[K", 1)[1].startswith("[sgd] 1/1 done (1 completed)")
