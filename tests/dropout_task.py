"""A user's task whose model has dropout, so that it cannot fuse (a fused member cannot draw the masks it
would draw alone): `--task tests/dropout_task.py:build_task`."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import optsweep
from optsweep.trainables import tasks


class DropoutMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_task(max_epochs: int = 6) -> optsweep.Task:
    digits = tasks.build_task("digits")
    return dataclasses.replace(digits, name="digits-dropout", model=DropoutMLP, max_epochs=max_epochs)
