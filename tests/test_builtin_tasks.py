"""The built-in tasks that are not classification: pydoc_lm (a byte-level language model on CPython's
documentation) and diabetes (regression), trained by the real loop against their baselines."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression

from optsweep import vocabulary as v
from optsweep.trainables import builtin_tasks, loop, sessions, text_corpus
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.language_model import DecoderLM
from optsweep.trainables.regression import diabetes_splits
from optsweep.trainables.tasks import TaskError, build_task, check, param_groups
from optsweep.vocabulary import Target

SMALL_LM = {
    "context_length": 32,
    "width": 32,
    "layers": 1,
    "heads": 2,
    "corpus_fraction": 0.2,
    "batch_size": 16,
}
TASK_ARGS = {"pydoc_lm": SMALL_LM, "diabetes": {}}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Six engineers share two cores here: two intra-op threads per process make small models many
    times slower under that load, one does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(name: str, lr: float, max_epochs: int) -> tuple[dict, sessions.LocalSession]:
    session = sessions.LocalSession()
    config = TrainConfig(
        task=name, task_args=TASK_ARGS[name], optimizer="adam", hparams={"lr": lr}, max_epochs=max_epochs
    )
    return loop.train(config, session), session


def _reported_every_epoch(session: sessions.LocalSession, name: str, max_epochs: int) -> None:
    task = build_task(name, TASK_ARGS[name])
    assert [r[v.EPOCH] for r in session.reports] == list(range(1, max_epochs + 1))
    for report in session.reports:
        assert not report[v.DIVERGED_FLAG]
        for metric in task.metric_names:
            assert math.isfinite(report[v.val_key(metric)]) and math.isfinite(report[v.test_key(metric)])
        assert report[task.target.best_key] == task.target.best_of(
            r[task.target.key] for r in session.reports[: report[v.EPOCH]]
        )


@pytest.mark.parametrize("name", ["pydoc_lm", "diabetes"])
def test_registered_and_fits_together(name: str) -> None:
    assert name in builtin_tasks.names()
    task = build_task(name, TASK_ARGS[name])
    check(task)
    assert task.target.mode == "min"


# ----------------------------------------------------------------------------------- pydoc_lm


def test_language_model_beats_the_unigram_and_uniform_baselines() -> None:
    last, session = _train("pydoc_lm", lr=3e-3, max_epochs=2)
    _reported_every_epoch(session, "pydoc_lm", 2)
    task = build_task("pydoc_lm", SMALL_LM)
    assert task.target == Target("perplexity", "min")
    val_targets = task.data().val.tensors[1]
    unigram = text_corpus.unigram_perplexity(val_targets)
    assert 10 < unigram < text_corpus.VOCAB_SIZE  # English text in bytes: ~4.7 bits per byte
    assert last["val_perplexity"] < 0.7 * unigram
    assert last["val_perplexity"] < 0.1 * text_corpus.VOCAB_SIZE  # guessing uniformly: 256
    assert last["test_perplexity"] < 0.7 * unigram
    # Predicting the most frequent byte (the space) everywhere: the accuracy to beat.
    most_frequent = torch.bincount(val_targets.reshape(-1)).max().item() / val_targets.numel()
    assert last["val_acc"] > most_frequent + 0.05
    # Every sequence has the same length, so the per-example mean loss is the per-token mean.
    for report in session.reports:
        assert report["val_perplexity"] == pytest.approx(math.exp(report["val_loss"]), rel=1e-6)
    assert session.reports[-1]["val_perplexity"] < session.reports[0]["val_perplexity"]


def test_language_model_splits_are_deterministic_and_cover_every_topic_once() -> None:
    topics = {"b": "0123456789", "a": "abcdefghijklmnopqrst", "c": "é"}
    splits = text_corpus.split_topics(topics)
    as_bytes = [bytes(t.to(torch.uint8).tolist()) for t in (splits.train, splits.val, splits.test)]
    # Sorted topic order; per topic the first 80% trains, the next 10% validates, the rest tests.
    # Tokens are UTF-8 bytes: the two bytes of "é" are two tokens.
    assert as_bytes == [b"abcdefghijklmnop" + b"01234567" + "é".encode(), b"qr" + b"8", b"st" + b"9"]
    half = text_corpus.split_topics(topics, fraction=0.5)
    assert bytes(half.train.to(torch.uint8).tolist()) == b"abcdefgh" + b"0123" + "é".encode()[:1]

    pydoc = text_corpus.pydoc_topics()
    full = text_corpus.split_topics(pydoc)
    assert sum(len(t) for t in (full.train, full.val, full.test)) == sum(
        len(text.encode("utf-8")) for text in pydoc.values()
    )
    first, second = (build_task("pydoc_lm", SMALL_LM).data() for _ in range(2))
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(first, split).tensors, getattr(second, split).tensors, strict=True):
            assert torch.equal(a, b)


def test_sequences_are_next_token_pairs_over_consecutive_windows() -> None:
    inputs, targets = text_corpus.sequences(torch.arange(11), 3).tensors
    assert inputs.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert targets.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="too few"):
        text_corpus.sequences(torch.arange(3), 3)


def test_unigram_perplexity_is_exp_of_the_token_entropy() -> None:
    assert text_corpus.unigram_perplexity(torch.arange(8).repeat(3)) == pytest.approx(8.0)
    p = np.array([0.25, 0.75])
    expected = math.exp(-(p * np.log(p)).sum())
    assert text_corpus.unigram_perplexity(torch.tensor([5, 9, 9, 9])) == pytest.approx(expected)


def test_language_model_attention_is_causal() -> None:
    torch.manual_seed(0)
    model = DecoderLM(vocab_size=256, context_length=16, width=32, layers=2, heads=4).eval()
    tokens = torch.randint(0, 256, (2, 16))
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 256
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert before.shape == (2, 16, 256)
    torch.testing.assert_close(before[:, :10], after[:, :10])  # the past does not see the future
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_language_model_weight_decay_spares_biases_norms_and_counts_tied_weights_once() -> None:
    task = build_task("pydoc_lm", SMALL_LM)
    assert task.weight_decay == "matrices_only"
    model = task.model()
    decayed, plain = param_groups(model, task.weight_decay)
    assert plain["weight_decay"] == 0.0 and "weight_decay" not in decayed
    named = dict(model.named_parameters())  # the tied output weight appears once, as the embedding
    assert "head.weight" not in named and model.head.weight is model.token_embedding.weight
    exempt = {n for n in named if n.endswith("bias") or "norm" in n}
    assert {id(p) for p in plain["params"]} == {id(named[n]) for n in exempt}
    assert {id(p) for p in decayed["params"]} == {id(p) for n, p in named.items() if n not in exempt}
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"width": 30, "heads": 4}, "width 30"),
        ({"layers": 0}, "layers 0"),
        ({"corpus_fraction": 1.5}, "corpus_fraction 1.5"),
        ({"dropout": 1.0}, "dropout 1.0"),
    ],
)
def test_language_model_bad_arguments_are_one_line_errors(args: dict, named: str) -> None:
    with pytest.raises(TaskError, match=named) as error:
        build_task("pydoc_lm", args)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------------- diabetes


def test_regression_beats_the_mean_and_reaches_linear_regression() -> None:
    last, session = _train("diabetes", lr=1e-3, max_epochs=30)
    _reported_every_epoch(session, "diabetes", 30)
    train, val, _ = diabetes_splits()
    mean_baseline = float(((val.target - train.target.mean()) ** 2).mean())
    linear = LinearRegression().fit(train.features, train.target)
    linear_mse = float(((linear.predict(val.features) - val.target) ** 2).mean())
    assert 0.8 < mean_baseline < 1.2  # standardised with the training split's statistics
    assert last["val_mse"] < 0.7 * mean_baseline
    assert last["val_mse"] < 1.15 * linear_mse
    assert last["test_mse"] < 0.7 * mean_baseline
    for report in session.reports:
        assert report["val_mse"] == pytest.approx(report["val_loss"], rel=1e-5)
        assert report["val_mae"] <= math.sqrt(report["val_mse"]) + 1e-6  # mean |e| <= sqrt(mean e^2)


def test_regression_splits_are_deterministic_disjoint_and_standardised_on_train() -> None:
    train, val, test = diabetes_splits()
    assert (len(train.target), len(val.target), len(test.target)) == (265, 88, 89)
    rows = np.concatenate([np.column_stack([s.features, s.target]) for s in (train, val, test)])
    assert len(np.unique(rows, axis=0)) == 442  # every patient in exactly one split
    np.testing.assert_allclose(train.features.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.features.std(axis=0), 1, atol=1e-5)
    assert abs(float(train.target.mean())) < 1e-5 and float(train.target.std()) == pytest.approx(1, abs=1e-5)
    again = diabetes_splits()
    for a, b in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.target, b.target)
    other = diabetes_splits(split_seed=1)
    assert not np.array_equal(other[1].target, val.target)


def test_regression_model_gives_one_value_per_example_for_the_mse_loss() -> None:
    task = build_task("diabetes", {"hidden": 8})
    data = task.data()
    inputs, targets = data.train.tensors
    with torch.no_grad():
        outputs = task.model()(inputs[:5])
    assert outputs.shape == targets[:5].shape == (5,)  # (B, 1) against (B,) would broadcast to (B, B)
    expected = sum((float(o) - float(t)) ** 2 for o, t in zip(outputs, targets[:5], strict=True)) / 5
    assert float(task.loss(outputs, targets[:5])) == pytest.approx(expected, rel=1e-5)
