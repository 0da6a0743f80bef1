"""Hand-made optsweep experiment directories shaped like what Ray Tune 2.60 writes, with known answers.

`write_experiment` writes `<root>/<optimizer>/` per optimizer: an `experiment_state-*.json` with
`trial_data`, one trial directory per started trial (params.json, result.json, progress.csv and
error.txt for failures). `standard_experiment` builds the one most tests use; its right answers
are spelled out next to it.
"""

from __future__ import annotations

import csv
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DIVERGED_SENTINELS = {"val_acc": 0.0, "train_loss": 1e9, "val_loss": 1e9, "test_acc": 0.0}
MAX_EPOCHS = 5
STATE_NAME = "experiment_state-2026-11-22_00-00-00.json"


@dataclass
class FakeTrial:
    """One trial. `val_accs` are the accuracies of the epochs it reported normally; a diverged
    trial then reports one more line with `diverged: true` and sentinel metrics."""

    optimizer: str
    seed: int
    hparams: dict[str, Any]
    val_accs: list[float] = field(default_factory=list)
    tune_status: str = "TERMINATED"  # PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    diverged: bool = False
    error: bool = False  # writes error.txt
    test_acc: float | None = None  # reported on the final line when the trial reached max_epochs
    max_epochs: int = MAX_EPOCHS
    started: bool = True  # False: pending, appears only in the experiment state
    truncate_last_line: bool = False  # a crash cut result.json's last line in half


def rising(best: float, epochs: int = MAX_EPOCHS) -> list[float]:
    """A plausible learning curve that ends at its maximum `best`."""
    return [*(round(best - 0.3 * 0.5**e + 0.3 * 0.5**epochs, 6) for e in range(epochs - 1)), best]


def write_experiment(
    root: Path,
    trials: list[FakeTrial],
    *,
    state: str = "ok",  # "ok", "missing" or "corrupt"
    settings: dict[str, Any] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    by_optimizer: dict[str, list[FakeTrial]] = {}
    for trial in trials:
        by_optimizer.setdefault(trial.optimizer, []).append(trial)
    for optimizer, group in by_optimizer.items():
        tune_dir = root / optimizer
        tune_dir.mkdir(exist_ok=True)
        prefix = f"{zlib.crc32(optimizer.encode()) % 0xFFFFF:05x}"
        entries = []
        for index, trial in enumerate(group):
            trial_id = f"{prefix}_{index:05d}"
            config = _config(trial, settings)
            tag = f"lr={trial.hparams.get('lr')},seed={trial.seed}"
            logdir = f"train_fn_{trial_id}_{index}_{tag}_2026-11-22_00-00-00"
            if trial.started:
                _write_trial_dir(tune_dir / logdir, trial_id, trial, config)
            entries.append(_state_entry(trial_id, trial, config, logdir if trial.started else None))
        state_path = tune_dir / STATE_NAME
        if state == "ok":
            state_path.write_text(json.dumps({"trial_data": entries, "runner_data": {}, "stats": {}}))
        elif state == "corrupt":
            state_path.write_text(json.dumps({"trial_data": entries})[:200])
    return root


def _config(trial: FakeTrial, settings: dict[str, Any] | None) -> dict[str, Any]:
    run_settings = {"dataset": "digits", "model": "mlp", "max_epochs": trial.max_epochs, "batch_size": 64}
    run_settings.update(settings or {})
    return {
        "optimizer": trial.optimizer,
        "seed": trial.seed,
        **trial.hparams,
        "settings": run_settings,
        "__trial_index__": trial.seed,
    }


def _results(trial_id: str, trial: FakeTrial, config: dict[str, Any]) -> list[dict[str, Any]]:
    lines = []
    elapsed = 0.0
    for epoch, val_acc in enumerate(trial.val_accs, start=1):
        elapsed += 0.5
        metrics = {
            "train_loss": round(1.05 - val_acc, 6),
            "val_loss": round(1.1 - val_acc, 6),
            "val_acc": val_acc,
            "diverged": False,
        }
        lines.append(_line(trial_id, trial, config, epoch, elapsed, metrics))
    if trial.diverged:
        elapsed += 0.5
        epoch = len(trial.val_accs) + 1
        lines.append(_line(trial_id, trial, config, epoch, elapsed, {**DIVERGED_SENTINELS, "diverged": True}))
    elif lines and len(trial.val_accs) >= trial.max_epochs:
        lines[-1]["test_acc"] = trial.test_acc if trial.test_acc is not None else lines[-1]["val_acc"] - 0.01
    if lines and trial.tune_status == "TERMINATED":
        lines[-1]["done"] = True
    return lines


def _line(
    trial_id: str,
    trial: FakeTrial,
    config: dict[str, Any],
    epoch: int,
    elapsed: float,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        **metrics,
        "lr": trial.hparams.get("lr"),
        "epoch_time_s": 0.5,
        "samples_per_s": 2000.0,
        "node_id": "node-a",
        "timestamp": 1795306350 + epoch,
        "done": False,
        "training_iteration": epoch,
        "trial_id": trial_id,
        "time_this_iter_s": 0.5,
        "time_total_s": elapsed,
        "pid": 1234,
        "hostname": "vm",
        "node_ip": "192.0.2.2",
        "config": config,
    }


def _write_trial_dir(trial_dir: Path, trial_id: str, trial: FakeTrial, config: dict[str, Any]) -> None:
    trial_dir.mkdir()
    (trial_dir / "params.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    lines = _results(trial_id, trial, config)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if trial.truncate_last_line and lines:
        text = text[: -len(json.dumps(lines[-1])) // 2]
    (trial_dir / "result.json").write_text(text)
    with open(trial_dir / "progress.csv", "w", newline="") as f:
        columns = sorted({k for line in lines for k in line if k != "config"})
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: v for k, v in line.items() if k != "config"} for line in lines)
    if trial.error:
        (trial_dir / "error.txt").write_text(
            "Failure # 1 (occurred at 2026-11-22_00-00-10)\nTraceback (most recent call last):\n"
            '  File "trainable.py", line 3, in train\nRuntimeError: CUDA out of memory (fake)\n'
        )


def _state_entry(trial_id: str, trial: FakeTrial, config: dict[str, Any], logdir: str | None) -> list[str]:
    state = {
        "trial_id": trial_id,
        "status": trial.tune_status,
        "config": config,
        "relative_logdir": logdir,
        "trainable_name": "train_fn",
        "experiment_tag": f"{trial_id}",
        "storage": {"_type": "CLOUDPICKLE_FALLBACK", "value": "80049500"},
    }
    runtime = {
        "start_time": 1795306350.0,
        "num_failures": int(trial.error),
        "error_filename": "error.txt" if trial.error else None,
        "last_result": {},
    }
    return [json.dumps(state, indent=2), json.dumps(runtime)]


# --- the standard experiment -------------------------------------------------------------------

ADAM = {"lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
SGD = {"lr": 0.1, "weight_decay": 5e-4, "schedule": "step", "momentum": 0.9, "nesterov": True}

# Right answers of `standard_experiment`:
#   adam: best config lr=1e-3, wd=0 with best val accs [0.95, 0.96, 0.94] (mean 0.95, std 0.01).
#         lr=0.1 scores higher (0.975 over two seeds) but one seed diverged, so it never wins.
#         lr=1e-2, wd=1e-4 scores 0.985 but one of its seeds errored: 2 finished seeds < 3 required.
#   sgd:  best config lr=0.1 with [0.93, 0.94, 0.95] (mean 0.94, std 0.01).
#         lr=1.0 diverged everywhere; lr=0.3 is half-finished (one pending, one running).
#   Intervals overlap: "no significant difference".
ADAM_BEST = [0.95, 0.96, 0.94]
SGD_BEST = [0.93, 0.94, 0.95]


def standard_trials() -> list[FakeTrial]:
    trials: list[FakeTrial] = []

    def adam(seed: int, vals: list[float], **kw: Any) -> FakeTrial:
        hparams = {**ADAM, **{k: kw.pop(k) for k in ("lr", "weight_decay") if k in kw}}
        return FakeTrial("adam", seed, hparams, vals, **kw)

    def sgd(seed: int, vals: list[float], **kw: Any) -> FakeTrial:
        hparams = {**SGD, **{k: kw.pop(k) for k in ("lr", "weight_decay") if k in kw}}
        return FakeTrial("sgd", seed, hparams, vals, **kw)

    for seed, best in enumerate(ADAM_BEST):
        trials.append(adam(seed, rising(best), test_acc=best - 0.02))
    for seed, best in enumerate([0.90, 0.91, 0.92]):
        trials.append(adam(seed, rising(best), lr=1e-2))
    trials.append(adam(0, [0.6, 0.99], lr=0.1, diverged=True))
    trials.append(adam(1, rising(0.97), lr=0.1))
    trials.append(adam(2, rising(0.98), lr=0.1))
    trials.append(adam(0, [0.80, 0.85], weight_decay=1e-4))  # stopped early by ASHA
    trials.append(adam(1, rising(0.93), weight_decay=1e-4))
    trials.append(adam(2, rising(0.93), weight_decay=1e-4))
    trials.append(adam(0, [0.7], lr=1e-2, weight_decay=1e-4, tune_status="ERROR", error=True))
    trials.append(adam(1, rising(0.99), lr=1e-2, weight_decay=1e-4))
    trials.append(adam(2, rising(0.98), lr=1e-2, weight_decay=1e-4))

    for seed, best in enumerate(SGD_BEST):
        trials.append(sgd(seed, rising(best), test_acc=best - 0.01))
    for seed, best in enumerate([0.88, 0.87, 0.89]):
        trials.append(sgd(seed, rising(best), lr=0.01))
    trials.append(sgd(0, [], lr=1.0, diverged=True))
    trials.append(sgd(1, [0.3], lr=1.0, diverged=True))
    trials.append(sgd(2, [0.3, 0.2], lr=1.0, diverged=True))
    trials.append(sgd(0, rising(0.92), lr=0.3))
    trials.append(sgd(1, [], lr=0.3, tune_status="PENDING", started=False))
    trials.append(sgd(2, [0.5, 0.6, 0.7], lr=0.3, tune_status="RUNNING", truncate_last_line=True))
    return trials


def standard_experiment(root: Path, **kwargs: Any) -> Path:
    return write_experiment(root, standard_trials(), **kwargs)
