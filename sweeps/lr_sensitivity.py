"""The DeepOBS protocol: how sensitive is each optimizer to its learning rate, and how good is its best one?

    python sweeps/lr_sensitivity.py            # digits: sgd, momentum (SGD, 0.9), adam; 36 lrs each
    python sweeps/lr_sensitivity.py --smoke    # 4 lrs, 2 epochs, 2 confirmation seeds: seconds
    python sweeps/lr_sensitivity.py --help     # every flag of the headline study, and the three below

Schneider, Balles & Hennig, "DeepOBS" (ICLR 2019): each optimizer's learning rate on a log grid (36 points
from 1e-5 to 1e2), every other hyperparameter at its default, a constant learning rate, one seed per grid
point; the best learning rate is then retrained on 10 fresh seeds. The study is sweeps/lr_sensitivity.yaml
(grid search, no early stopping); after it, its section lr_sensitivity.md (sensitivity curves with every
seed, diverged points marked, the width of the good-lr range, the confirmation seeds' median, quartiles
and mean +- std) is written into the report directory beside report.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from optsweep.sweeps import startup

if __name__ == "__main__":
    startup.begin()  # first: the imports below take seconds, and a Ctrl-C during them is one line

from optsweep.errors import OptsweepError
from optsweep.sweeps import cli, spec, study_file

STUDY_FILE = Path(__file__).with_name("lr_sensitivity.yaml")
LR_MIN, LR_MAX, LR_POINTS = 1e-5, 1e2, 36
SMOKE_LR_POINTS = 4  # 1e-5 .. 1e2 in 4 points: too small, good, too large (diverges)
SMOKE_CONFIRM_SEEDS = 2  # --smoke keeps a confirmation stage, so the section's final table is exercised
FIXED = {"momentum": {"momentum": 0.9}}
"""Hyperparameters held away from their defaults, by optimizer label: the momentum variant's momentum."""

GRID_FLAGS = (
    "The learning-rate grid, this study's own flags (every other hyperparameter stays at its default): "
    "--lr-min LR, the grid's lowest lr (default: 1e-05); --lr-max LR, its highest (default: 100); "
    "--lr-points N, log-spaced points, the same for every optimizer (default: 36; --smoke: 4)."
)


def lr_grid(low: float, high: float, points: int) -> list[float]:
    """`points` learning rates spaced evenly in log10 from `low` to `high` (both included), to 6
    significant digits; a one-line OptsweepError for a grid that cannot be built."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise OptsweepError(f"--lr-points {points!r} is invalid: it must be an integer >= 2")
    for flag, value in (("--lr-min", low), ("--lr-max", high)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise OptsweepError(f"{flag} {value!r} is invalid: it must be a finite number > 0")
    if not low < high:
        raise OptsweepError(f"--lr-min {low:g} must be below --lr-max {high:g}")
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return [float(f"{10 ** (math.log10(low) + i * step):.6g}") for i in range(points)]


def lr_spaces(labels: tuple[str, ...], grid: list[float]) -> dict[str, dict[str, object]]:
    """Each optimizer's search space: the lr grid as a choice, its FIXED hyperparameters, nothing else."""
    return {label: {"lr": {"choice": list(grid)}, **FIXED.get(label, {})} for label in labels}


class _OneLine(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise OptsweepError(message)


def _split_grid_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This study's grid flags, and the rest of the command line for the headline study's parser."""
    parser = _OneLine(add_help=False)
    parser.add_argument("--lr-min", type=float)
    parser.add_argument("--lr-max", type=float)
    parser.add_argument("--lr-points", type=int)
    peek = _OneLine(add_help=False)
    peek.add_argument("--optimizers")
    peek.add_argument("--smoke", action="store_true")
    grid, rest = parser.parse_known_args(argv)
    seen, _ = peek.parse_known_args(rest)
    grid.optimizers, grid.smoke = seen.optimizers, seen.smoke
    return grid, rest


def study_defaults(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The study file's settings with the lr grid the command line asks for, and the flags left for the
    headline study's parser (`--smoke` also gets a 4-point grid and 2 confirmation seeds)."""
    grid, rest = _split_grid_flags(argv)
    defaults = study_file.read(STUDY_FILE)
    points = grid.lr_points if grid.lr_points is not None else (SMOKE_LR_POINTS if grid.smoke else LR_POINTS)
    values = lr_grid(
        grid.lr_min if grid.lr_min is not None else LR_MIN,
        grid.lr_max if grid.lr_max is not None else LR_MAX,
        points,
    )
    chosen = grid.optimizers.split(",") if grid.optimizers is not None else defaults["optimizers"]
    labels = tuple(spec.label_of(item) for item in chosen if item.strip())
    defaults["search_spaces"] = lr_spaces(labels, values)
    if grid.smoke and not any(a == "--confirm-seeds" or a.startswith("--confirm-seeds=") for a in rest):
        rest = [*rest, "--confirm-seeds", str(SMOKE_CONFIRM_SEEDS)]
    return defaults, rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        defaults, flags = study_defaults(argv)
    except OptsweepError as error:
        return cli.fail(str(error))
    prog = "python sweeps/lr_sensitivity.py"
    description = f"{(__doc__ or '').split(chr(10) + chr(10))[0]} {GRID_FLAGS}"
    where = str(STUDY_FILE)
    code = cli.main(flags, prog=prog, description=description, defaults=defaults, where=where)
    if code != 0:
        return code
    ran = cli.parse(flags, prog, description, defaults, where=where)  # where it ran (already checked)
    if ran.is_remote_storage:
        print(
            f"The sensitivity section reads a local directory: copy {ran.experiment_dir} here and run "
            "python -m optsweep.analysis.sensitivity DIR"
        )
        return 0
    from optsweep.analysis import sensitivity

    print(f"Learning-rate sensitivity (DeepOBS protocol): {sensitivity.write_section(ran.experiment_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
