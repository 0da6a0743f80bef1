"""The tasks that ship with optsweep, by name (`--task NAME`, `Study(task="NAME")`).

Classification on digits (embedded, the offline default), MNIST, FashionMNIST and CIFAR-10 with the
`mlp`, `cnn` or `resnet18` model; each factory's keyword arguments are the task's arguments
(`--task-arg model=cnn`).

Not classification: "pydoc_lm", a byte-level GPT-style language model on the Python documentation that
ships with CPython (target: validation perplexity, min; `trainables.language_model`), and "diabetes",
an MLP regressor on scikit-learn's diabetes data (target: validation MSE, min; `trainables.regression`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from . import data, models
from .language_model import pydoc_lm
from .regression import diabetes
from .tasks import Task, TaskData


def _classification(dataset: str, default_model: str, batch_size: int) -> Callable[..., Task]:
    def factory(model: str = default_model, data_dir: str | None = None, max_epochs: int = 20) -> Task:
        models.check_model_name(model)

        def splits() -> TaskData:
            loaded = data.load_splits(dataset, data_dir)
            return TaskData(loaded.train, loaded.val, loaded.test)

        def build() -> models.nn.Module:
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
