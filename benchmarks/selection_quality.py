"""What fewer search seeds cost in selection quality: how often the search stage picks a configuration
within 1 seed-SD of the best one, at 5 search seeds (the default before the confirmation stage) and at 3
(the default now, which pays for the 10 confirmation seeds).

A seeded simulation of the default study's search: 24 configurations whose true results are drawn N(0, tau^2)
in units of the seed-to-seed standard deviation (sigma = 1), each judged by successive halving as
`sweeps.early_stopping.halving` does it (rungs keep the top third of 24, then of 8, then the best of 2, by the
mean over the configuration's seeds; each rung's seeds are fresh noise around the true result). tau is the
spread of the configurations' true results relative to the seed noise: the default digits
study measured tau/sigma near 0.5-1 among its 8 best configurations at epoch 6 and far more over all 24.

    python benchmarks/selection_quality.py            # 20,000 studies per cell
    python benchmarks/selection_quality.py --quick    # 2,000 (the suite)

Prints, per tau and seed count: the share of studies whose chosen configuration is within 1 SD of the
best true result, and the mean shortfall (best true result - chosen one, in SDs).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

CONFIGURATIONS = 24
KEEP = (8, 2, 1)  # survivors of each rung of 24 configurations with reduction factor 3
TAUS = (0.5, 1.0, 2.0)
SEEDS = (5, 3)


def simulate(tau: float, seeds: int, studies: int, rng: np.random.Generator) -> tuple[float, float]:
    """(share of studies choosing within 1 SD of the best, mean shortfall in SDs)."""
    truth = rng.normal(0.0, tau, size=(studies, CONFIGURATIONS))
    alive = np.ones_like(truth, dtype=bool)
    for keep in KEEP:
        observed = truth + rng.normal(0.0, 1.0, size=(studies, CONFIGURATIONS, seeds)).mean(axis=2)
        observed[~alive] = -np.inf
        ranked = np.argsort(-observed, axis=1, kind="stable")[:, :keep]
        alive = np.zeros_like(alive)
        np.put_along_axis(alive, ranked, True, axis=1)
    chosen = truth[alive]  # one per study after the last rung
    shortfall = truth.max(axis=1) - chosen
    return float((shortfall <= 1.0).mean()), float(shortfall.mean())


def table(studies: int, seed: int = 0) -> list[tuple[float, int, float, float]]:
    rng = np.random.default_rng(seed)
    return [(tau, s, *simulate(tau, s, studies, rng)) for tau in TAUS for s in SEEDS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 simulated studies per cell")
    parser.add_argument("--studies", type=int, default=20_000)
    args = parser.parse_args(argv)
    studies = 2_000 if args.quick else args.studies
    print(f"{studies} simulated studies per cell; tau: spread of true results / seed SD")
    print("tau  search seeds  within 1 SD of the best  mean shortfall (SD)")
    for tau, seeds, within, shortfall in table(studies):
        print(f"{tau:<4g} {seeds:>12d}  {within:>23.3f}  {shortfall:>19.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
