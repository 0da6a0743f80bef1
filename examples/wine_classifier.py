"""Your own model and data: which optimizer trains a small residual MLP on scikit-learn's wine data best?

The model and the data are defined here, not in optsweep. Run it as a script (the Python API):

    python examples/wine_classifier.py            # Adam, AdamW, SGD: 6 configurations x 3 seeds, 10 confirm
    python examples/wine_classifier.py --smoke    # a few seconds of training

or hand the task to the command line or a study file by its path:

    python sweeps/adam_vs_sgd.py --task examples/wine_classifier.py:build_task --task-arg hidden=32
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import TensorDataset

import optsweep


class ResidualMLP(nn.Module):
    """Two residual blocks with LayerNorm: the kind of model whose biases and norm weights are usually
    left out of weight decay (the task says so with weight_decay="matrices_only")."""

    def __init__(self, features: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.inp = nn.Linear(features, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU()) for _ in range(2)
        )
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def wine_splits() -> optsweep.TaskData:
    """178 wines, 13 chemical measurements, 3 cultivars: 60/20/20 stratified, standardised on train."""
    x, y = load_wine(return_X_y=True)
    rest_x, test_x, rest_y, test_y = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=0.25, stratify=rest_y, random_state=0
    )
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)

    def tensors(features: np.ndarray, labels: np.ndarray) -> TensorDataset:
        scaled = ((features - mean) / std).astype(np.float32)
        return TensorDataset(torch.from_numpy(scaled), torch.from_numpy(labels.astype(np.int64)))

    return optsweep.TaskData(tensors(train_x, train_y), tensors(val_x, val_y), tensors(test_x, test_y))


def build_task(hidden: int = 64, max_epochs: int = 30) -> optsweep.Task:
    return optsweep.Task(
        name="wine-resmlp",
        model=lambda: ResidualMLP(13, 3, hidden),
        data=wine_splits,
        loss=nn.functional.cross_entropy,
        metrics={"acc": optsweep.ACCURACY},
        target=optsweep.Target("acc", "max"),
        batch_size=16,
        max_epochs=max_epochs,
        weight_decay="matrices_only",
    )


def main(argv: list[str]) -> None:
    smoke = "--smoke" in argv
    study = optsweep.Study(
        build_task(max_epochs=3 if smoke else 30),
        optimizers=["adam", "adamw", "sgd"],
        num_samples=2 if smoke else 6,
        seeds=1 if smoke else 3,
        confirm_seeds=0 if smoke else 10,  # as --smoke: the search stage only
        name="wine-smoke" if smoke else "wine",
    )
    result = study.run(storage_path="optsweep_results")
    print(result.verdict)
    print(f"Report: {result.report_dir / 'report.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
