"""A task with enough examples for the large-batch question: a student MLP learns a random teacher.

Inputs are Gaussian vectors; each label is the class a fixed random teacher network (one tanh hidden
layer) scores highest, replaced with probability `label_noise` by a class drawn uniformly. Everything is
generated from `data_seed`, so every trial process builds the same data, and any number of examples can
be drawn: the training set can be large next to the batch sizes a CPU trains (digits has 1,347 training
examples, so there its whole training set is one batch of 1,347).

The optimum is known: no classifier beats predicting the teacher's class, whose expected accuracy on a
noisy label is ``1 - label_noise + label_noise / classes`` (`bayes_accuracy`); the student (two ReLU
hidden layers) can represent the teacher's decision regions closely but not exactly.

    --task optsweep.trainables.large_batch_task:build_task --task-arg n_train=16384
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .tasks import Task, TaskData, TaskError

TEACHER_HIDDEN = 32
TEACHER_SCALE = 1.0
_SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}  # independent streams per split, all from data_seed


def bayes_accuracy(label_noise: float, classes: int) -> float:
    """The best expected accuracy on labels that are the teacher's class with probability
    1 - label_noise and uniform otherwise: predict the teacher's class."""
    return 1.0 - label_noise + label_noise / classes


def _teacher(dim: int, classes: int, data_seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(data_seed)
    first = nn.Linear(dim, TEACHER_HIDDEN)
    second = nn.Linear(TEACHER_HIDDEN, classes)
    with torch.no_grad():
        for layer in (first, second):
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(
                torch.randn(layer.weight.shape, generator=generator) * TEACHER_SCALE / math.sqrt(fan_in)
            )
            layer.bias.zero_()
    return nn.Sequential(first, nn.Tanh(), second)


@functools.lru_cache(maxsize=4)
def _splits(
    n_train: int, n_val: int, n_test: int, dim: int, classes: int, label_noise: float, data_seed: int
) -> TaskData:
    teacher = _teacher(dim, classes, data_seed)
    datasets = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        generator = torch.Generator().manual_seed(data_seed * 1000 + _SPLIT_SEEDS[split])
        inputs = torch.randn(n, dim, generator=generator)
        with torch.no_grad():
            labels = teacher(inputs).argmax(dim=1)
        flipped = torch.rand(n, generator=generator) < label_noise
        noise = torch.randint(0, classes, (n,), generator=generator)
        datasets[split] = TensorDataset(inputs, torch.where(flipped, noise, labels))
    return TaskData(datasets["train"], datasets["val"], datasets["test"])


def build_task(
    n_train: int = 16384,
    n_val: int = 4096,
    n_test: int = 4096,
    dim: int = 8,
    classes: int = 5,
    hidden: int = 64,
    label_noise: float = 0.1,
    data_seed: int = 0,
    batch_size: int = 64,
    max_epochs: int = 16,
) -> Task:
    """The teacher-student classification task (see the module docstring); sizes in examples."""
    for name, value in (
        ("n_train", n_train),
        ("n_val", n_val),
        ("n_test", n_test),
        ("dim", dim),
        ("hidden", hidden),
        ("batch_size", batch_size),
        ("max_epochs", max_epochs),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TaskError(f"large_batch task: {name} {value!r} is invalid: it must be an integer >= 1")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise TaskError(f"large_batch task: classes {classes!r} is invalid: it must be an integer >= 2")
    if not 0.0 <= label_noise < 1.0:
        raise TaskError(f"large_batch task: label_noise {label_noise!r} is invalid: it must be in [0, 1)")

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    return Task(
        name=f"teacher-d{dim}-c{classes}-n{n_train}",
        model=model,
        data=lambda: _splits(n_train, n_val, n_test, dim, classes, float(label_noise), data_seed),
        batch_size=batch_size,
        max_epochs=max_epochs,
        divergence_loss=100 * math.log(classes),
    )
