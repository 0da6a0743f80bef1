"""Hand-made optsweep experiment directories shaped like what Ray Tune 2.60 and the training loop
write, with known answers.

`write_experiment` writes `<root>/<optimizer>/` per optimizer: an `experiment_state-*.json` with
`trial_data`, one trial directory per started trial (params.json, result.json, progress.csv and
error.txt for failures), and `<root>/study.json` with the target when the experiment has one. The
result lines use the project's vocabulary (`optsweep.vocabulary`) as the loop does: every epoch
reports the losses (test_loss too), val_<m> and test_<m> of each task metric m and
best_val_<target>; a diverged epoch reports DIVERGED_VALUE losses and `target.worst` for the
target. `legacy=True` writes what experiments from before targets held instead: test_acc on the
last line of a trial that ran to its end only, val_acc and test_acc 0 on a diverged line, no
best_val_acc, no test_loss, no study.json.

`standard_experiment` builds the experiment most tests use; its right answers are spelled out next to
it. `PERPLEXITY` and `MSE` give the same experiment for min metrics (`standard_experiment(root,
kind=PERPLEXITY)`): every value is mapped by a decreasing affine function, so the right answers are
the same configurations with mirrored values.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optsweep import vocabulary as v
from optsweep.vocabulary import DEFAULT_TARGET, Target

MAX_EPOCHS = 5
STATE_NAME = "experiment_state-2026-11-22_00-00-00.json"


@dataclass(frozen=True)
class Kind:
    """A fake task: its target, and how its other per-epoch numbers follow from the target value y.
    `mirror` maps an accuracy-like quality in [0, 1] to the target's value (identity for accuracy)."""

    target: Target = DEFAULT_TARGET
    mirror: Callable[[float], float] = lambda q: q
    loss: Callable[[float], float] = lambda y: 1.05 - y
    test: Callable[[float], float] = lambda y: y - 0.01  # the test value of an epoch, a little worse
    others: dict[str, Callable[[float], float]] = field(default_factory=dict)  # other task metrics


ACC = Kind()
PERPLEXITY = Kind(
    Target("perplexity", "min"),
    mirror=lambda q: 20.0 * (1.0 - q) + 1.0,
    loss=math.log,
    test=lambda y: y * 1.01,
    others={"acc": lambda y: 1.0 / y},  # next-token accuracy, reported beside perplexity
)
MSE = Kind(
    Target("mse", "min"),
    mirror=lambda q: 0.05 * (1.0 - q),
    loss=lambda y: y,
    test=lambda y: y * 1.01,
    others={"mae": math.sqrt},
)


@dataclass
class FakeTrial:
    """One trial. `values` are the target metric of the epochs it reported normally; a diverged
    trial then reports one more line with `diverged: true` and sentinel metrics."""

    optimizer: str
    seed: int
    hparams: dict[str, Any]
    values: list[float] = field(default_factory=list)
    tune_status: str = "TERMINATED"  # PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    diverged: bool = False
    error: bool = False  # writes error.txt
    test_final: float | None = None  # the test value of its last epoch (default: kind.test of it)
    max_epochs: int = MAX_EPOCHS
    started: bool = True  # False: pending, appears only in the experiment state
    truncate_last_line: bool = False  # a crash cut result.json's last line in half
    configuration: int | None = None  # the config's __configuration number (None: not written)
    stage: str | None = None  # the config's __stage (None: not written, i.e. search)
    config_extra: dict[str, Any] = field(default_factory=dict)  # raw config keys written as they are
    diverged_reason: str | None = None  # the diverged line's diverged_reason (None: not written)


def rising(best: float, epochs: int = MAX_EPOCHS) -> list[float]:
    """A plausible accuracy curve that ends at its maximum `best`."""
    return [*(round(best - 0.3 * 0.5**e + 0.3 * 0.5**epochs, 6) for e in range(epochs - 1)), best]


def write_experiment(
    root: Path,
    trials: list[FakeTrial],
    *,
    state: str = "ok",  # "ok", "missing" or "corrupt"
    settings: dict[str, Any] | None = None,
    kind: Kind = ACC,
    record_target: bool = True,  # write study.json with the target (never for legacy experiments)
    legacy: bool = False,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if record_target and not legacy:
        study = {v.TARGET_RECORD_KEY: kind.target.to_json(), "name": root.name}
        (root / v.STUDY_FILE).write_text(json.dumps(study, indent=2))
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
                lines = _results(trial_id, trial, config, kind, legacy)
                _write_trial_dir(tune_dir / logdir, trial, config, lines)
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
    config = {
        "optimizer": trial.optimizer,
        "seed": trial.seed,
        **trial.hparams,
        "settings": run_settings,
        "__trial_index__": trial.seed,
        **trial.config_extra,
    }
    if trial.configuration is not None:
        config[v.CONFIGURATION_KEY] = trial.configuration
    if trial.stage is not None:
        config[v.STAGE_KEY] = trial.stage
    return config


def _results(
    trial_id: str, trial: FakeTrial, config: dict[str, Any], kind: Kind, legacy: bool
) -> list[dict[str, Any]]:
    target = kind.target
    lines = []
    elapsed = 0.0
    best = math.nan
    reached_end = len(trial.values) >= trial.max_epochs
    for epoch, value in enumerate(trial.values, start=1):
        elapsed += 0.5
        if not target.better(best, value):
            best = value
        last = epoch == len(trial.values)
        test = trial.test_final if last and trial.test_final is not None else round(kind.test(value), 6)
        metrics: dict[str, Any] = {
            v.TRAIN_LOSS: round(kind.loss(value), 6),
            v.VAL_LOSS: round(kind.loss(value) + 0.05, 6),
            target.key: value,
        }
        if not legacy:
            metrics[v.TEST_LOSS] = round(kind.loss(test) + 0.05, 6)
        if not legacy or (last and reached_end):
            metrics[target.test_key] = test
        for name, of in kind.others.items():
            metrics[v.val_key(name)] = round(of(value), 6)
            metrics[v.test_key(name)] = round(of(test), 6)
        if not legacy:
            metrics[target.best_key] = best
        metrics[v.DIVERGED_FLAG] = False
        lines.append(_line(trial_id, trial, config, epoch, elapsed, metrics))
    if trial.diverged:
        elapsed += 0.5
        if legacy:
            sentinels = {target.key: 0.0, target.test_key: 0.0}
        else:
            so_far = target.worst if math.isnan(best) else best
            sentinels = {target.key: target.worst, target.best_key: so_far}
        losses = {v.TRAIN_LOSS: v.DIVERGED_VALUE, v.VAL_LOSS: v.DIVERGED_VALUE}
        metrics = {**losses, **sentinels, v.DIVERGED_FLAG: True}
        if trial.diverged_reason is not None:
            metrics[v.DIVERGED_REASON] = trial.diverged_reason
        lines.append(_line(trial_id, trial, config, len(trial.values) + 1, elapsed, metrics))
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
        v.EPOCH: epoch,
        **metrics,
        v.LR: trial.hparams.get("lr"),
        v.EPOCH_TIME_S: 0.5,
        v.SAMPLES_PER_S: 2000.0,
        v.NODE_ID: "node-a",
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


def _write_trial_dir(trial_dir: Path, trial: FakeTrial, config: dict[str, Any], lines: list[dict]) -> None:
    trial_dir.mkdir()
    (trial_dir / "params.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if trial.truncate_last_line and lines:
        text = text[: -len(json.dumps(lines[-1])) // 2]
    (trial_dir / "result.json").write_text(text)
    with open(trial_dir / "progress.csv", "w", newline="") as f:
        columns = sorted({k for line in lines for k in line if k != "config"})
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: val for k, val in line.items() if k != "config"} for line in lines)
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

# Right answers of `standard_experiment` (accuracies; for another kind, mapped by kind.mirror):
#   adam: best config lr=1e-3, wd=0 with best val accs [0.95, 0.96, 0.94] (mean 0.95, std 0.01).
#         lr=0.1 scores higher (0.975 over two seeds) but one seed diverged, so it never wins.
#         lr=1e-2, wd=1e-4 scores 0.985 but one of its seeds errored: 2 finished seeds < 3 required.
#   sgd:  best config lr=0.1 with [0.93, 0.94, 0.95] (mean 0.94, std 0.01).
#         lr=1.0 diverged everywhere; lr=0.3 is half-finished (one pending, one running).
#   Intervals overlap: "no significant difference".
ADAM_BEST = [0.95, 0.96, 0.94]
SGD_BEST = [0.93, 0.94, 0.95]


def standard_trials(kind: Kind = ACC) -> list[FakeTrial]:
    trials: list[FakeTrial] = []

    def make(optimizer: str, base: dict[str, Any], seed: int, qualities: list[float], **kw: Any) -> FakeTrial:
        hparams = {**base, **{k: kw.pop(k) for k in ("lr", "weight_decay") if k in kw}}
        if "test_final" in kw:
            kw["test_final"] = round(kind.mirror(kw["test_final"]), 6)
        return FakeTrial(optimizer, seed, hparams, [round(kind.mirror(q), 6) for q in qualities], **kw)

    def adam(seed: int, qualities: list[float], **kw: Any) -> FakeTrial:
        return make("adam", ADAM, seed, qualities, **kw)

    def sgd(seed: int, qualities: list[float], **kw: Any) -> FakeTrial:
        return make("sgd", SGD, seed, qualities, **kw)

    for seed, best in enumerate(ADAM_BEST):
        trials.append(adam(seed, rising(best), test_final=best - 0.02))
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
        trials.append(sgd(seed, rising(best), test_final=best - 0.01))
    for seed, best in enumerate([0.88, 0.87, 0.89]):
        trials.append(sgd(seed, rising(best), lr=0.01))
    trials.append(sgd(0, [], lr=1.0, diverged=True))
    trials.append(sgd(1, [0.3], lr=1.0, diverged=True))
    trials.append(sgd(2, [0.3, 0.2], lr=1.0, diverged=True))
    trials.append(sgd(0, rising(0.92), lr=0.3))
    trials.append(sgd(1, [], lr=0.3, tune_status="PENDING", started=False))
    trials.append(sgd(2, [0.5, 0.6, 0.7], lr=0.3, tune_status="RUNNING", truncate_last_line=True))
    return trials


def standard_experiment(root: Path, *, kind: Kind = ACC, **kwargs: Any) -> Path:
    return write_experiment(root, standard_trials(kind), kind=kind, **kwargs)
