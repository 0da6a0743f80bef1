"""What optsweep ships, by name: the built-in optimizers, LR schedules, tasks, models and tracking
backends. Pure Python (no torch, no Ray), so the command line's help and the study spec's checks name
them without importing torch; the registries that build them (`optsweep.optimizers`,
`optsweep.trainables.builtin_tasks`, ...) hold the same names, in the same order (tests/test_catalog.py).
"""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop", "lamb", "lars")
SCHEDULES = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "cosine",
    "warmup_cosine",
    "onecycle",
    "plateau",
)
DATASET_TASKS = ("digits", "mnist", "fashion_mnist", "cifar10")
"""Built-in classification tasks named after their dataset (`--dataset` picks one)."""
TASKS = (*DATASET_TASKS, "pydoc_lm", "diabetes")
MODELS = ("mlp", "cnn", "resnet18")
"""The models of the dataset tasks (`--model`)."""
TRACKING_BACKENDS = ("tensorboard", "mlflow", "wandb")
MODES = ("sync", "zero1", "async-ps")
"""How a trial's workers train: data parallel, with the optimizer state sharded, or through an
asynchronous parameter server."""
MIN_WORKERS = {"sync": 1, "zero1": 2, "async-ps": 1}
"""The fewest workers per trial each mode runs with (zero1 shards the optimizer state across them).
The study spec and the training loop's config both check it here, once."""
