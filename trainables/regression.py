"""The built-in regression task: scikit-learn's diabetes data (442 patients, 10 baseline measurements,
the disease progression a year later; embedded in the package, no download) fitted by an MLP.

Features and target are standardised with the training split's mean and standard deviation, so a
model that predicts the training mean scores a validation MSE of about 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from optsweep.vocabulary import Target

from .task_types import MAE, MSE, Task, TaskData

# numpy and torch are imported where the task is built: the built-in tasks' names cost neither.
if TYPE_CHECKING:
    import numpy as np
    from torch import nn
    from torch.utils.data import TensorDataset

TARGET = Target("mse", "min")
ABSOLUTE_ERROR = "mae"
FEATURES = 10
"""Age, sex, body-mass index, blood pressure and six blood serum measurements."""
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
"""Train, validation, test: 265, 88 and 89 of the 442 rows."""


@dataclass(frozen=True)
class Arrays:
    """One split as standardised float32 arrays: features (N, 10) and target (N,)."""

    features: np.ndarray
    target: np.ndarray

    def dataset(self) -> TensorDataset:
        import torch
        from torch.utils.data import TensorDataset

        return TensorDataset(torch.from_numpy(self.features), torch.from_numpy(self.target))


def diabetes_splits(split_seed: int = 0) -> tuple[Arrays, Arrays, Arrays]:
    """(train, val, test) of the diabetes data, drawn at random with `split_seed` and standardised with
    the training split's statistics."""
    import numpy as np
    from sklearn.datasets import load_diabetes  # scikit-learn takes a second to import: only when used
    from sklearn.model_selection import train_test_split

    features, target = load_diabetes(return_X_y=True, scaled=False)
    rows = np.arange(len(target))
    train, rest = train_test_split(rows, train_size=SPLIT_FRACTIONS[0], random_state=split_seed)
    val_share = SPLIT_FRACTIONS[1] / (SPLIT_FRACTIONS[1] + SPLIT_FRACTIONS[2])
    val, test = train_test_split(rest, train_size=val_share, random_state=split_seed)
    x_mean, x_std = features[train].mean(axis=0), features[train].std(axis=0)
    y_mean, y_std = target[train].mean(), target[train].std()

    def standardised(idx: np.ndarray) -> Arrays:
        x = (features[np.sort(idx)] - x_mean) / x_std
        y = (target[np.sort(idx)] - y_mean) / y_std
        return Arrays(x.astype(np.float32), y.astype(np.float32))

    return standardised(train), standardised(val), standardised(test)


def mlp_regressor(inputs: int, hidden: int) -> nn.Sequential:
    """inputs -> hidden -> hidden -> one value per example, shape (B,)."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
        nn.Flatten(start_dim=0),
    )


def diabetes(hidden: int = 32, split_seed: int = 0, batch_size: int = 32, max_epochs: int = 30) -> Task:
    """Diabetes progression regression with an MLP; target: validation MSE (min) on the standardised
    target."""
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden {hidden!r} must be an integer >= 1")
    import torch.nn.functional as F

    def splits() -> TaskData:
        train, val, test = diabetes_splits(split_seed)
        return TaskData(train.dataset(), val.dataset(), test.dataset())

    return Task(
        name="diabetes",
        model=lambda: mlp_regressor(FEATURES, hidden),
        data=splits,
        loss=F.mse_loss,
        metrics={TARGET.metric: MSE, ABSOLUTE_ERROR: MAE},
        target=TARGET,
        batch_size=batch_size,
        max_epochs=max_epochs,
        # The target's variance is 1 on the training split: a loss 1000x that is a blow-up.
        divergence_loss=1000.0,
    )
