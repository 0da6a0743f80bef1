"""The tasks that ship with optsweep, by name (`--task NAME`, `Study(task="NAME")`): each task's recipe.

Classification on digits (embedded, the offline default), MNIST, FashionMNIST and CIFAR-10 with the
`mlp`, `cnn` or `resnet18` model; each factory's keyword arguments are the task's arguments
(`--task-arg model=cnn`).

Not classification: "pydoc_lm", a byte-level GPT-style language model on the Python documentation that
ships with CPython (target: validation perplexity, min; the model in `trainables.language_model`), and
"diabetes", an MLP regressor on scikit-learn's diabetes data (target: validation MSE, min;
`trainables.regression`).

Importing this module imports no torch, torchvision or scikit-learn (the command line lists the names):
the models and the data are imported when a task is built and run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from optsweep.vocabulary import Target

from . import data, models, text_corpus
from .regression import diabetes
from .task_types import ACCURACY, PERPLEXITY, Task, TaskData, token_cross_entropy

if TYPE_CHECKING:
    from torch import nn

LM_TARGET = Target("perplexity", "min")
TOKEN_ACCURACY = "acc"


def _classification(dataset: str, default_model: str, batch_size: int) -> Callable[..., Task]:
    def factory(model: str = default_model, data_dir: str | None = None, max_epochs: int = 20) -> Task:
        models.check_model_name(model)

        def splits() -> TaskData:
            loaded = data.load_splits(dataset, data_dir)
            return TaskData(loaded.train, loaded.val, loaded.test)

        def build() -> nn.Module:
            spec = data.spec(dataset)
            return models.build_model(model, spec.input_shape, spec.num_classes)

        return Task(
            name=f"{dataset}-{model}",
            model=build,
            data=splits,
            batch_size=batch_size,
            max_epochs=max_epochs,
            # A loss 100x that of guessing uniformly means the run has blown up.
            divergence_loss=100 * math.log(data.spec(dataset).num_classes),
        )

    factory.__name__ = dataset
    factory.__doc__ = f"{dataset} classification with the given model ({', '.join(models.MODELS)})."
    return factory


def pydoc_lm(
    context_length: int = 64,
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    dropout: float = 0.0,
    corpus_fraction: float = 1.0,
    batch_size: int = 32,
    max_epochs: int = 3,
) -> Task:
    """Byte-level language model on the Python documentation; target: validation perplexity (min).

    `context_length` tokens per sequence, `width` the embedding width, `layers` transformer blocks of
    `heads` attention heads; `corpus_fraction` keeps the first part of every documentation topic
    (smaller and faster runs, the same mix of topics).
    """
    vocab_size = text_corpus.VOCAB_SIZE
    for name, value in (
        ("context_length", context_length),
        ("width", width),
        ("layers", layers),
        ("heads", heads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} {value!r} must be an integer >= 1")
    if width % heads:
        raise ValueError(f"width {width} must be a multiple of heads {heads}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout {dropout!r} must be in [0, 1)")
    if not 0 < corpus_fraction <= 1:
        raise ValueError(f"corpus_fraction {corpus_fraction!r} must be in (0, 1]")

    def splits() -> TaskData:
        tokens = text_corpus.split_topics(text_corpus.pydoc_topics(), corpus_fraction)
        train, val, test = (
            text_corpus.sequences(part, context_length) for part in (tokens.train, tokens.val, tokens.test)
        )
        return TaskData(train, val, test)

    def model() -> nn.Module:
        from .language_model import DecoderLM

        return DecoderLM(vocab_size, context_length, width, layers, heads, dropout)

    return Task(
        name="pydoc_lm",
        model=model,
        data=splits,
        loss=token_cross_entropy,
        metrics={LM_TARGET.metric: PERPLEXITY, TOKEN_ACCURACY: ACCURACY},
        target=LM_TARGET,
        batch_size=batch_size,
        max_epochs=max_epochs,
        weight_decay="matrices_only",
        # A loss 100x that of guessing uniformly over the bytes means the run has blown up.
        divergence_loss=100 * math.log(vocab_size),
    )


TASKS: dict[str, Callable[..., Task]] = {
    "digits": _classification("digits", "mlp", 64),
    "mnist": _classification("mnist", "mlp", 64),
    "fashion_mnist": _classification("fashion_mnist", "mlp", 64),
    "cifar10": _classification("cifar10", "resnet18", 128),
    "pydoc_lm": pydoc_lm,
    "diabetes": diabetes,
}


def names() -> list[str]:
    return list(TASKS)
