"""optsweep's optimizers: drop-in replacements for torch.optim, plus the large-batch LAMB and LARS.

Each class subclasses `torch.optim.Optimizer` with torch's argument names, defaults, state layout and
trajectory; the formulas live once in `optimizers.transforms`. `build(name, params, **hparams)` and
`names()` are the registry the sweeps use; `optimizers.schedules` builds LR schedules.
"""

from . import schedules
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lamb import LAMB
from .lars import LARS
from .registry import build, names, optimizer_class
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "LAMB",
    "LARS",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "RMSprop",
    "build",
    "names",
    "optimizer_class",
    "schedules",
]
