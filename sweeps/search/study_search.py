"""The searcher of a whole study: one Tune experiment whose trials carry `config["optimizer"]`.

In an optimizer comparison each optimizer is a scientific parameter, and its nuisance hyperparameters are
tuned with the same budget as every other optimizer's (google-research/tuning_playbook). One experiment
for the whole study needs a searcher that keeps those budgets apart: `PerOptimizerSearch` holds one
sub-searcher per optimizer label (preset trials for a random search or a confirmation, Optuna behind a
seed repeater for TPE) and gives each optimizer exactly its count of trials.

The order in which it creates trials is what shares the cluster fairly: Ray 2.60's TuneController starts
every pending trial it has resources for, in the order the trials were created, whatever a scheduler's
`choose_trial_to_run` says. Trials are therefore created round-robin over the optimizers (an optimizer
never waits behind the whole budget of another), optionally with a cap on each optimizer's live trials.

`PresetTrials` is the sub-searcher for configurations drawn up front: it hands them out in order and
remembers how far it got, so a restored experiment neither repeats nor skips one.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

logger = logging.getLogger(__name__)

_STATE_VERSION = 1


class PresetTrials(Searcher):
    """Hands out a fixed list of complete trial configurations, in order, each once; then FINISHED.

    Why not Tune's BasicVariantGenerator with `points_to_evaluate`: that is a SearchAlgorithm, not a
    Searcher, so it cannot sit beside other searchers under `PerOptimizerSearch`; and a Searcher's position
    is saved with the experiment, so a resumed sweep continues with the next configuration instead of
    creating the first ones again.
    """

    def __init__(self, configs: list[dict[str, Any]], *, metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self._configs = [copy.deepcopy(config) for config in configs]
        self._position = 0

    @property
    def remaining(self) -> int:
        """How many configurations are still to be handed out."""
        return len(self._configs) - self._position

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Accepts any properties: the configurations are complete, there is no space to fill in."""
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._position >= len(self._configs):
            return Searcher.FINISHED
        config = copy.deepcopy(self._configs[self._position])
        self._position += 1
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Nothing to learn: the configurations were fixed up front."""

    def save(self, checkpoint_path: str) -> None:
        state = {"configs": self._configs, "position": self._position}
        with open(checkpoint_path, "wb") as file:
            pickle.dump(state, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)
        self._configs = state["configs"]
        self._position = state["position"]


class PerOptimizerSearch(Searcher):
    """One sub-searcher per optimizer label, each given exactly `counts[label]` trials, created round-robin.

    - Every optimizer gets exactly its count of trials (fewer only if its sub-searcher says FINISHED):
      the equal tuning budget that makes the comparison fair.
    - Each suggestion goes to the next optimizer after the one served last that can give a trial now
      (not done, under its live cap, its sub-searcher not answering None). Ray 2.60 starts pending trials
      in creation order, so this order is what shares the cluster between the optimizers.
    - `max_live` (--max-concurrent, where no scheduler caps the running trials itself) caps each
      optimizer's trials suggested but not yet completed. It is not saved: a resumed run's own applies.
    - Results and completions go to the sub-searcher that suggested the trial (`label_of`).
    - `save`/`restore` keep the counters, the trial -> label map, the round-robin position and every
      sub-searcher's state (a wrapper's such as Repeater's too, which its own `save` leaves out), so a
      restored experiment continues each optimizer's count exactly.

    Returns None from `suggest` while no optimizer can give a trial now, FINISHED once all are done.
    """

    def __init__(
        self,
        searchers: Mapping[str, Searcher],
        counts: Mapping[str, int],
        *,
        max_live: int | None = None,
        metric: str | None = None,
        mode: str | None = None,
    ):
        if set(searchers) != set(counts):
            raise ValueError(
                f"searchers and counts must name the same optimizers: {sorted(searchers)} vs {sorted(counts)}"
            )
        if not searchers:
            raise ValueError("PerOptimizerSearch needs at least one optimizer")
        if any(count < 0 for count in counts.values()):
            raise ValueError(f"counts must not be negative: {dict(counts)}")
        if max_live is not None and max_live < 1:
            raise ValueError(f"max_live must be at least 1, got {max_live}")
        for label, searcher in searchers.items():
            if not isinstance(searcher, Searcher):
                raise TypeError(f"the searcher of {label!r} is not a ray.tune.search.Searcher: {searcher!r}")
        super().__init__(metric=metric, mode=mode)
        # The round-robin order is the order the optimizers were given in.
        self._labels: list[str] = list(searchers)
        # Not named `searcher`: Tune's SearchGenerator would take this searcher for a wrapper of it.
        self._subs: dict[str, Searcher] = dict(searchers)
        self._counts: dict[str, int] = {label: int(counts[label]) for label in self._labels}
        self.max_live = max_live  # not saved: a resumed run's --max-concurrent applies
        self._given: dict[str, int] = dict.fromkeys(self._labels, 0)
        self._finished: set[str] = set()  # sub-searchers that said FINISHED
        self._live: dict[str, set[str]] = {label: set() for label in self._labels}
        self._trial_labels: dict[str, str] = {}
        self._last = -1  # index in self._labels of the optimizer served last
        self._study_metric, self._study_mode = metric, mode
        if metric or mode:
            # What Tune does with a TuneConfig's metric and mode (it skips the call for an empty
            # param_space, so the metric given here would otherwise never reach the sub-searchers).
            for sub in self._subs.values():
                sub.set_search_properties(metric, mode, {})

    # ------------------------------------------------------------------------------------------ queries
    def label_of(self, trial_id: str) -> str | None:
        """The optimizer label whose sub-searcher suggested `trial_id`; None for a trial not from here."""
        return self._trial_labels.get(trial_id)

    def given(self, label: str) -> int:
        """How many trials optimizer `label` has been given so far."""
        return self._given[label]

    def live(self, label: str) -> int:
        """How many of optimizer `label`'s trials are suggested but not completed."""
        return len(self._live[label])

    def done(self, label: str) -> bool:
        """Whether optimizer `label` will be given no more trials."""
        return label in self._finished or self._given[label] >= self._counts[label]

    @property
    def metric(self) -> str | None:
        return self._study_metric

    @property
    def mode(self) -> str | None:
        return self._study_mode

    # ---------------------------------------------------------------------------------------- searcher
    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Forwarded to every sub-searcher (the metric and mode given at init stand in for missing ones);
        True only if every one accepted."""
        metric = metric or self._study_metric
        mode = mode or self._study_mode
        self._study_metric, self._study_mode = metric, mode
        accepted = [sub.set_search_properties(metric, mode, config, **spec) for sub in self._subs.values()]
        return all(accepted)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """A study-wide cap is Tune's ConcurrencyLimiter's business (this searcher's own cap is per
        optimizer): not handled here."""
        return False

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        count = len(self._labels)
        for step in range(1, count + 1):
            index = (self._last + step) % count
            label = self._labels[index]
            if self.done(label):
                continue
            if self.max_live is not None and len(self._live[label]) >= self.max_live:
                continue
            config = self._subs[label].suggest(trial_id)
            if config == Searcher.FINISHED:
                logger.debug("Optimizer %s finished after %d trials.", label, self._given[label])
                self._finished.add(label)
                continue
            if config is None:
                continue
            self._given[label] += 1
            self._live[label].add(trial_id)
            self._trial_labels[trial_id] = label
            self._last = index
            return config
        if all(self.done(label) for label in self._labels):
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        label = self._trial_labels.get(trial_id)
        if label is None:
            logger.warning("Result of trial %s, which PerOptimizerSearch did not suggest: ignored.", trial_id)
            return
        self._subs[label].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        label = self._trial_labels.get(trial_id)
        if label is None:
            logger.warning(
                "Completion of trial %s, which PerOptimizerSearch did not suggest: ignored.", trial_id
            )
            return
        self._live[label].discard(trial_id)
        self._subs[label].on_trial_complete(trial_id, result=result, error=error)

    # ------------------------------------------------------------------------------- save and restore
    def save(self, checkpoint_path: str) -> None:
        state = {
            "version": _STATE_VERSION,
            "labels": self._labels,
            "counts": self._counts,
            "metric": self._study_metric,
            "mode": self._study_mode,
            "given": self._given,
            "finished": sorted(self._finished),
            "live": {label: sorted(ids) for label, ids in self._live.items()},
            "trial_labels": self._trial_labels,
            "last": self._last,
            "subs": {label: _save_sub(sub) for label, sub in self._subs.items()},
        }
        with open(checkpoint_path, "wb") as file:
            pickle.dump(state, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"{checkpoint_path}: unknown PerOptimizerSearch state version {state.get('version')}"
            )
        if set(state["labels"]) != set(self._labels):
            raise ValueError(
                f"{checkpoint_path} holds the optimizers {state['labels']}, this searcher has {self._labels}"
            )
        self._labels = list(state["labels"])
        self._counts = dict(state["counts"])
        self._study_metric = state["metric"]
        self._study_mode = state["mode"]
        self._given = dict(state["given"])
        self._finished = set(state["finished"])
        self._live = {label: set(ids) for label, ids in state["live"].items()}
        self._trial_labels = dict(state["trial_labels"])
        self._last = state["last"]
        for label, sub_state in state["subs"].items():
            _restore_sub(label, self._subs[label], sub_state)


def _wrapper_chain(searcher: Searcher) -> list[Searcher]:
    """The searcher and the searchers it wraps (Repeater, ConcurrencyLimiter: their `searcher`), outermost
    first, as Tune's SearchGenerator walks them."""
    chain = [searcher]
    while hasattr(chain[-1], "searcher"):
        chain.append(chain[-1].searcher)
    return chain


def _save_sub(sub: Searcher) -> dict[str, Any]:
    """A sub-searcher's state: each wrapper's `get_state()` (Repeater's `save` saves only the searcher it
    wraps, its groups of seeds are saved by Tune's SearchGenerator through `get_state`, which it does not
    reach here) and the bytes its own `save` writes (None when it cannot save, as Tune tolerates)."""
    wrappers = [wrapper.get_state() for wrapper in _wrapper_chain(sub)[:-1]]
    descriptor, path = tempfile.mkstemp(prefix="optsweep-sub-searcher-", suffix=".pkl")
    os.close(descriptor)
    try:
        os.unlink(path)  # a searcher that saves nothing leaves no file
        try:
            sub.save(path)
        except NotImplementedError:
            logger.warning("%s cannot save its state; a restored study restarts it.", type(sub).__name__)
            saved = None
        else:
            saved = Path(path).read_bytes() if os.path.exists(path) else None
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return {"wrappers": wrappers, "saved": saved}


def _restore_sub(label: str, sub: Searcher, state: dict[str, Any]) -> None:
    for wrapper, wrapper_state in zip(_wrapper_chain(sub)[:-1], state["wrappers"], strict=True):
        wrapper.set_state(wrapper_state)
    if state["saved"] is None:
        logger.warning("No saved state for the searcher of %s: it restarts.", label)
        return
    descriptor, path = tempfile.mkstemp(prefix="optsweep-sub-searcher-", suffix=".pkl")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(state["saved"])
        sub.restore(path)
    finally:
        os.unlink(path)
