"""The headline study: is Adam better than SGD with momentum for this model, once each is tuned fairly?

    python sweeps/adam_vs_sgd.py            # local Ray, CPU, the embedded digits dataset
    python sweeps/adam_vs_sgd.py --smoke    # a one-minute version
    python sweeps/adam_vs_sgd.py --help     # every flag (cluster: --address auto, see docs/cluster.md)

Each optimizer (SGD with momentum and Nesterov as a choice, Adam, AdamW by default) gets its own search
space and the same budget: --num-samples configurations x --seeds seeds, early-stopped by ASHA on
validation accuracy. The report (tables, plots, verdict) lands in <storage-path>/<name>/report/.
"""

from __future__ import annotations

import sys

from optsweep.sweeps import startup

if __name__ == "__main__":
    startup.begin()  # first: the imports below take seconds, and a Ctrl-C during them is one line

from optsweep.sweeps import cli
from optsweep.sweeps.spec import StudySpec

DEFAULTS = StudySpec(name="adam_vs_sgd")
"""The spec's defaults are the headline study: sgd, adam and adamw on digits (its budget: 20 epochs),
24 configurations x 3 search seeds each, then 10 fresh confirmation seeds."""


def main(argv: list[str] | None = None) -> int:
    return cli.main(
        argv,
        prog="python sweeps/adam_vs_sgd.py",
        description=(__doc__ or "").split("\n\n")[0],
        defaults=DEFAULTS,
    )


if __name__ == "__main__":
    sys.exit(main())
