"""The study's searcher (sweeps/search/study_search.py): exact per-optimizer budgets, round-robin creation
order, live caps, routing, and save/restore that continues exactly, alone and under a real Ray Tune."""

from __future__ import annotations

import functools
import os
import pickle
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ray import tune
from ray.tune.search import Searcher

from optsweep.sweeps.early_stopping.halving import SeedRepeater
from optsweep.sweeps.search.study_search import PerOptimizerSearch, PresetTrials

FINISHED = Searcher.FINISHED


class FakeSub(Searcher):
    """A sub-searcher whose suggestions name it and count up; it can refuse (None) or run out (FINISHED),
    and it records what it was told."""

    def __init__(self, name: str, limit: int | None = None) -> None:
        super().__init__()
        self.name = name
        self.limit = limit
        self.blocked = False
        self.made = 0
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.completions: list[tuple[str, dict[str, Any] | None, bool]] = []
        self.properties: list[tuple[Any, Any, dict[str, Any]]] = []
        self.accept = True

    def set_search_properties(self, metric: Any, mode: Any, config: dict[str, Any], **spec: Any) -> bool:
        self.properties.append((metric, mode, config))
        return self.accept

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.blocked:
            return None
        if self.limit is not None and self.made >= self.limit:
            return FINISHED
        self.made += 1
        return {"optimizer": self.name, "n": self.made}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.results.append((trial_id, result))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self.completions.append((trial_id, result, error))

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.made))

    def restore(self, checkpoint_path: str) -> None:
        self.made = pickle.loads(Path(checkpoint_path).read_bytes())


def _drain(searcher: Searcher, prefix: str = "t", start: int = 0, limit: int = 100) -> list[Any]:
    """Suggestions until FINISHED or None (FINISHED/None included as the last item)."""
    out = []
    for i in range(start, start + limit):
        config = searcher.suggest(f"{prefix}{i}")
        out.append(config)
        if config in (None, FINISHED):
            return out
    raise AssertionError("the searcher never stopped")


def _names(configs: list[Any]) -> list[Any]:
    return [c if c in (None, FINISHED) else (c["optimizer"], c["n"]) for c in configs]


# ------------------------------------------------------------------------------------------- PresetTrials
def test_preset_trials_gives_deep_copies_in_order_then_finished(tmp_path: Path) -> None:
    configs = [{"x": 1, "nested": {"a": [1]}}, {"x": 2, "nested": {"a": [2]}}]
    preset = PresetTrials(configs)
    first = preset.suggest("a")
    first["nested"]["a"].append(99)
    configs[1]["x"] = "changed by the caller"
    assert first == {"x": 1, "nested": {"a": [1, 99]}}
    assert preset.suggest("b") == {"x": 2, "nested": {"a": [2]}}
    assert preset.suggest("c") == FINISHED
    assert preset.suggest("d") == FINISHED
    assert preset.set_search_properties("score", "max", {}) is True


def test_preset_trials_restore_continues_with_the_next_config_and_the_saved_configs(tmp_path: Path) -> None:
    preset = PresetTrials([{"x": i} for i in range(3)])
    assert preset.suggest("a") == {"x": 0}
    path = str(tmp_path / "state.pkl")
    preset.save(path)
    restored = PresetTrials([])  # the configs come from the saved state
    restored.restore(path)
    assert [restored.suggest(t) for t in "bcd"] == [{"x": 1}, {"x": 2}, FINISHED]
    assert preset.remaining == 2 and restored.remaining == 0


# ------------------------------------------------------------------------------------ PerOptimizerSearch
def test_round_robin_with_equal_counts() -> None:
    searcher = PerOptimizerSearch({"a": FakeSub("a"), "b": FakeSub("b")}, {"a": 2, "b": 2})
    assert _names(_drain(searcher)) == [("a", 1), ("b", 1), ("a", 2), ("b", 2), FINISHED]
    assert searcher.suggest("again") == FINISHED
    assert [searcher.given(label) for label in "ab"] == [2, 2]


def test_round_robin_with_unequal_counts_gives_each_exactly_its_count() -> None:
    subs = {name: FakeSub(name) for name in "abc"}
    searcher = PerOptimizerSearch(subs, {"a": 3, "b": 1, "c": 2})
    assert _names(_drain(searcher)) == [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("c", 2), ("a", 3), FINISHED]
    assert {name: sub.made for name, sub in subs.items()} == {"a": 3, "b": 1, "c": 2}
    assert all(searcher.done(name) for name in "abc")


def test_a_zero_count_optimizer_is_never_asked() -> None:
    subs = {"a": FakeSub("a"), "b": FakeSub("b")}
    searcher = PerOptimizerSearch(subs, {"a": 0, "b": 2})
    assert _names(_drain(searcher)) == [("b", 1), ("b", 2), FINISHED]
    assert subs["a"].made == 0


def test_a_sub_that_answers_none_does_not_block_the_others() -> None:
    subs = {name: FakeSub(name) for name in "abc"}
    searcher = PerOptimizerSearch(subs, {"a": 2, "b": 2, "c": 2})
    subs["b"].blocked = True
    assert _names([searcher.suggest(t) for t in ("1", "2", "3", "4")]) == [
        ("a", 1),
        ("c", 1),
        ("a", 2),
        ("c", 2),
    ]
    # Only b is left and it cannot give a trial now: None (not FINISHED), so Tune asks again later.
    assert searcher.suggest("5") is None
    subs["b"].blocked = False
    assert _names(_drain(searcher, start=6)) == [("b", 1), ("b", 2), FINISHED]


def test_round_robin_starts_after_the_optimizer_served_last() -> None:
    subs = {name: FakeSub(name) for name in "abc"}
    searcher = PerOptimizerSearch(subs, {"a": 3, "b": 3, "c": 3})
    assert _names([searcher.suggest("1")]) == [("a", 1)]
    subs["b"].blocked = True
    assert _names([searcher.suggest("2")]) == [("c", 1)]
    subs["b"].blocked = False
    # After c comes a again (not b, which was skipped while it was blocked).
    assert _names([searcher.suggest(t) for t in ("3", "4", "5")]) == [("a", 2), ("b", 1), ("c", 2)]


def test_a_sub_that_finishes_early_leaves_its_optimizer_with_fewer_trials() -> None:
    subs = {"a": FakeSub("a", limit=1), "b": FakeSub("b")}
    searcher = PerOptimizerSearch(subs, {"a": 3, "b": 3})
    assert _names(_drain(searcher)) == [("a", 1), ("b", 1), ("b", 2), ("b", 3), FINISHED]
    assert searcher.given("a") == 1 and searcher.done("a")


def test_max_live_caps_each_optimizer_and_a_completion_frees_its_slot() -> None:
    subs = {"a": FakeSub("a"), "b": FakeSub("b")}
    searcher = PerOptimizerSearch(subs, {"a": 3, "b": 2}, max_live=1)
    assert _names([searcher.suggest(t) for t in ("a1", "b1")]) == [("a", 1), ("b", 1)]
    assert searcher.suggest("x") is None  # both at their cap
    assert (searcher.live("a"), searcher.live("b")) == (1, 1)
    searcher.on_trial_complete("b1", {"score": 1.0})
    assert _names([searcher.suggest("b2")]) == [("b", 2)]
    assert searcher.suggest("y") is None
    searcher.on_trial_result("a1", {"score": 0.5})  # a result frees nothing
    assert searcher.suggest("z") is None
    searcher.on_trial_complete("a1", None, error=True)  # an errored trial frees its slot too
    assert _names([searcher.suggest("a2")]) == [("a", 2)]
    assert searcher.suggest("w") is None  # a capped by a2; b is done
    searcher.on_trial_complete("a2", {"score": 2.0})
    assert _names([searcher.suggest("a3")]) == [("a", 3)]
    # Every trial given (a3 still live): FINISHED.
    assert searcher.suggest("v") == FINISHED


def test_results_and_completions_go_to_the_sub_that_suggested_the_trial() -> None:
    subs = {"a": FakeSub("a"), "b": FakeSub("b")}
    searcher = PerOptimizerSearch(subs, {"a": 1, "b": 1})
    searcher.suggest("ta")
    searcher.suggest("tb")
    assert (searcher.label_of("ta"), searcher.label_of("tb"), searcher.label_of("nope")) == ("a", "b", None)
    searcher.on_trial_result("tb", {"score": 1})
    searcher.on_trial_complete("ta", {"score": 2}, error=False)
    searcher.on_trial_complete("tb", None, error=True)
    searcher.on_trial_result("unknown", {"score": 3})  # not ours: ignored, nobody told
    searcher.on_trial_complete("unknown", {"score": 3})
    assert subs["a"].results == [] and subs["b"].results == [("tb", {"score": 1})]
    assert subs["a"].completions == [("ta", {"score": 2}, False)]
    assert subs["b"].completions == [("tb", None, True)]


def test_search_properties_are_forwarded_to_every_sub() -> None:
    subs = {"a": FakeSub("a"), "b": FakeSub("b")}
    searcher = PerOptimizerSearch(subs, {"a": 1, "b": 1}, metric="score", mode="max")
    # Given at init: passed on as Tune passes a TuneConfig's metric and mode.
    assert subs["a"].properties == [("score", "max", {})] == subs["b"].properties
    assert searcher.set_search_properties(None, None, {"k": 1}) is True
    assert subs["a"].properties[-1] == ("score", "max", {"k": 1})  # init's metric stands in
    subs["b"].accept = False
    assert searcher.set_search_properties("loss", "min", {}) is False
    assert subs["a"].properties[-1] == ("loss", "min", {})  # still told, although b refused
    assert (searcher.metric, searcher.mode) == ("loss", "min")
    both_preset = PerOptimizerSearch({"a": PresetTrials([]), "b": PresetTrials([])}, {"a": 0, "b": 0})
    assert both_preset.set_search_properties("score", "max", {}) is True


def test_mismatched_optimizers_are_refused() -> None:
    with pytest.raises(ValueError, match="same optimizers"):
        PerOptimizerSearch({"a": FakeSub("a")}, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="max_live"):
        PerOptimizerSearch({"a": FakeSub("a")}, {"a": 1}, max_live=0)
    with pytest.raises(TypeError):
        PerOptimizerSearch({"a": object()}, {"a": 1})  # type: ignore[dict-item]


def _script(searcher: PerOptimizerSearch, steps: range, log: list[Any], issued: list[str]) -> None:
    """A fixed script of suggestions and completions: each step asks once; every third step completes the
    oldest trial not yet completed (so the live cap comes into play). `issued` lists the trials given and
    not yet completed, oldest first."""
    for step in steps:
        trial_id = f"trial{step}"
        config = searcher.suggest(trial_id)
        log.append(_names([config])[0])
        if isinstance(config, dict):
            issued.append(trial_id)
        if step % 3 == 2 and issued:
            searcher.on_trial_complete(issued.pop(0), {"score": step})


def _fresh() -> PerOptimizerSearch:
    subs = {
        "a": FakeSub("a"),
        "b": PresetTrials([{"optimizer": "b", "n": i} for i in range(1, 4)]),
        "c": FakeSub("c"),
    }
    return PerOptimizerSearch(subs, {"a": 4, "b": 5, "c": 3}, max_live=2)


@pytest.mark.parametrize("cut", [1, 4, 7, 10])
def test_save_and_restore_mid_way_continues_exactly(tmp_path: Path, cut: int) -> None:
    uninterrupted: list[Any] = []
    _script(_fresh(), range(20), uninterrupted, [])
    assert uninterrupted[-1] == FINISHED
    assert None in uninterrupted  # the live cap held some suggestions back
    given = [entry for entry in uninterrupted if isinstance(entry, tuple)]
    # b's preset has only 3 configurations: it finishes early; a and c get exactly their counts.
    assert sorted(given) == sorted(
        [("a", i) for i in range(1, 5)] + [("b", i) for i in range(1, 4)] + [("c", i) for i in range(1, 4)]
    )

    first = _fresh()
    log: list[Any] = []
    issued: list[str] = []
    _script(first, range(cut), log, issued)
    path = str(tmp_path / "searcher.pkl")
    first.save(path)
    second = _fresh()
    second.restore(path)
    _script(second, range(cut, 20), log, issued)
    assert log == uninterrupted
    assert [second.label_of(f"trial{i}") for i in range(cut)] == [
        first.label_of(f"trial{i}") for i in range(cut)
    ]


def test_a_restored_searcher_keeps_the_live_cap_it_was_given_not_the_saved_one(tmp_path: Path) -> None:
    """A resumed run's --max-concurrent applies (Tune restores the searcher's state into the searcher
    of the restored TuneConfig, whose cap the study sets to this run's)."""
    capped = PerOptimizerSearch({"a": PresetTrials([{"x": i} for i in range(3)])}, {"a": 3}, max_live=1)
    assert capped.suggest("t1") == {"x": 0} and capped.suggest("t2") is None
    path = str(tmp_path / "searcher.pkl")
    capped.save(path)
    uncapped = PerOptimizerSearch({"a": PresetTrials([{"x": i} for i in range(3)])}, {"a": 3}, max_live=1)
    uncapped.max_live = None
    uncapped.restore(path)
    assert uncapped.suggest("t2") == {"x": 1} and uncapped.suggest("t3") == {"x": 2}


def test_restore_runs_through_tunes_save_to_dir_and_restore_from_dir(tmp_path: Path) -> None:
    searcher = PerOptimizerSearch(
        {"a": PresetTrials([{"x": 1}, {"x": 2}]), "b": PresetTrials([{"x": 3}])}, {"a": 2, "b": 1}
    )
    assert searcher.suggest("t1") == {"x": 1}
    searcher.save_to_dir(str(tmp_path), session_str="s1")
    again = PerOptimizerSearch(
        {"a": PresetTrials([{"x": 1}, {"x": 2}]), "b": PresetTrials([{"x": 3}])}, {"a": 2, "b": 1}
    )
    again.restore_from_dir(str(tmp_path))
    assert [again.suggest(t) for t in ("t2", "t3", "t4")] == [{"x": 3}, {"x": 2}, FINISHED]
    assert again.label_of("t1") == "a"


# ------------------------------------------------------------------------------- real Optuna, seed repeats
def _space_sgd(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": "sgd",
        "lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
        "__configuration": trial.number,
    }


def _space_adam(trial: Any, beta_low: float) -> dict[str, Any]:
    return {
        "optimizer": "adam",
        "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        "beta1": trial.suggest_float("beta1", beta_low, 0.99),
        "__configuration": trial.number,
    }


def _optuna_study() -> PerOptimizerSearch:
    from ray.tune.search.optuna import OptunaSearch

    def repeated(space: Callable[[Any], dict[str, Any]], seed: int) -> SeedRepeater:
        return SeedRepeater(
            OptunaSearch(space=space, metric="score", mode="max", seed=seed), repeat=2, set_index=True
        )

    return PerOptimizerSearch(
        {"sgd": repeated(_space_sgd, 1), "adam": repeated(functools.partial(_space_adam, beta_low=0.5), 2)},
        {"sgd": 4, "adam": 6},
    )


def _optuna_script(searcher: PerOptimizerSearch, steps: range, log: list[dict[str, Any]]) -> None:
    """Suggest, then complete each trial at once with a score drawn from its config (deterministic)."""
    for step in steps:
        trial_id = f"trial{step}"
        config = searcher.suggest(trial_id)
        log.append(config)
        if isinstance(config, dict):
            searcher.on_trial_result(trial_id, {"score": config["lr"]})
            searcher.on_trial_complete(trial_id, {"score": config["lr"] * (1 + config["__trial_index__"])})


def test_optuna_behind_seed_repeaters_gets_exact_counts_and_restores_mid_group(tmp_path: Path) -> None:
    uninterrupted: list[Any] = []
    _optuna_script(_optuna_study(), range(12), uninterrupted)
    assert uninterrupted[-2:] == [FINISHED, FINISHED]
    configs = uninterrupted[:10]
    assert [c["optimizer"] for c in configs] == ["sgd", "adam"] * 4 + ["adam", "adam"]
    for optimizer, configurations in (("sgd", 2), ("adam", 3)):
        mine = [c for c in configs if c["optimizer"] == optimizer]
        # Pairs of seeds share their configuration; the searcher was asked once per pair.
        assert [c["__trial_index__"] for c in mine] == [0, 1] * configurations
        assert [c["__configuration"] for c in mine] == [i // 2 for i in range(2 * configurations)]
        for first, second in zip(mine[::2], mine[1::2], strict=True):
            assert {k: v for k, v in first.items() if k != "__trial_index__"} == {
                k: v for k, v in second.items() if k != "__trial_index__"
            }
    assert all(0.5 <= c["beta1"] <= 0.99 for c in configs if c["optimizer"] == "adam")

    # Cut after 3 suggestions: sgd's second seed of configuration 0 is still to come (a half-full group).
    first = _optuna_study()
    log: list[Any] = []
    _optuna_script(first, range(3), log)
    path = str(tmp_path / "searcher.pkl")
    first.save(path)
    second = _optuna_study()
    second.restore(path)
    _optuna_script(second, range(3, 12), log)
    assert log == uninterrupted


# ------------------------------------------------------------------------------------------- real Ray Tune
def _make_trainable() -> Callable[[dict[str, Any]], None]:
    # Built inside a function so that cloudpickle ships it by value: Ray's workers cannot import tests/.
    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        tune.report({"score": config["x"]})

    return trainable


PRESETS = {
    "adam": [{"optimizer": "adam", "x": i} for i in range(3)],
    "sgd": [{"optimizer": "sgd", "x": 10 + i} for i in range(2)],
}
COUNTS = {"adam": 3, "sgd": 2}


def _study_searcher() -> PerOptimizerSearch:
    return PerOptimizerSearch(
        {label: PresetTrials(configs) for label, configs in PRESETS.items()}, dict(COUNTS)
    )


def _configs(results: tune.ResultGrid) -> list[tuple[str, int]]:
    assert not results.errors
    return sorted((r.config["optimizer"], r.config["x"]) for r in results)


def _creation_order(results: tune.ResultGrid) -> list[tuple[int, str]]:
    """(creation number, optimizer) of every trial, in the order Tune created them (the number leads the
    trial's experiment tag)."""
    return sorted((int(r.metrics["experiment_tag"].split("_")[0]), r.config["optimizer"]) for r in results)


ROUND_ROBIN = list(enumerate(["adam", "sgd", "adam", "sgd", "adam"], start=1))
EXPECTED = sorted((c["optimizer"], c["x"]) for configs in PRESETS.values() for c in configs)


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("ray_session")
def test_a_tune_run_gives_each_optimizer_exactly_its_preset_trials(tmp_path: Path) -> None:
    tuner = tune.Tuner(
        _make_trainable(),
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=_study_searcher(), num_samples=sum(COUNTS.values()), metric="score", mode="max"
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="exp", verbose=0),
    )
    results = tuner.fit()
    assert _configs(results) == EXPECTED
    assert _creation_order(results) == ROUND_ROBIN
    assert results.get_best_result().config == {"optimizer": "sgd", "x": 11}


class InterruptOnce(tune.Callback):
    """Ctrl-C (SIGINT to this process, which Tune's handler turns into a graceful stop that leaves the
    experiment resumable) at the k-th result; once: the marker file keeps the copy of this callback that
    Tune restores with the experiment from firing again."""

    def __init__(self, marker: Path, results: int) -> None:
        self.marker = marker
        self.left = results

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.left -= 1
        if self.left > 0:
            return
        try:
            self.marker.rename(self.marker.with_name(self.marker.name + ".fired"))
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("ray_session")
def test_a_restored_tune_run_continues_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One trial at a time, created as it starts: the cut leaves some trials not yet created.
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "1")
    marker = tmp_path / "interrupt"
    marker.touch()
    tuner = tune.Tuner(
        _make_trainable(),
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=_study_searcher(),
            num_samples=sum(COUNTS.values()),
            metric="score",
            mode="max",
            max_concurrent_trials=1,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="exp", verbose=0, callbacks=[InterruptOnce(marker, 2)]
        ),
    )
    first = tuner.fit()
    assert (tmp_path / "interrupt.fired").exists()
    created = [(r.config["optimizer"], r.config["x"]) for r in first]
    assert 2 <= len(created) < len(EXPECTED), created  # interrupted part way
    restored = tune.Tuner.restore(str(tmp_path / "exp"), _make_trainable(), resume_unfinished=True)
    results = restored.fit()
    assert len(results) == len(EXPECTED)
    assert _configs(results) == EXPECTED
    # The restored searcher went on where it stopped: the same order an uninterrupted run creates.
    assert _creation_order(results) == ROUND_ROBIN
