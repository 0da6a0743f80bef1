"""DeepOBS's "Momentum" baseline as a contender of its own in the lr_sensitivity study.

optsweep's `sgd` at its defaults is plain SGD (momentum 0, as torch.optim.SGD); DeepOBS's baselines
include SGD with momentum 0.9 as a separate optimizer. A study labels each optimizer by its class, so the
momentum variant needs a class of its own to sit beside `sgd`: this one, with the study's search space
holding its momentum at 0.9 (`sweeps/lr_sensitivity.yaml`). A user's class runs unfused (only the
registered optimizers take per-member hyperparameters in a fused group).
"""

from __future__ import annotations

from optsweep.optimizers import SGD


class Momentum(SGD):
    """optsweep's SGD under the label ``momentum``; the study sets momentum=0.9 (heavy ball, no Nesterov)."""
