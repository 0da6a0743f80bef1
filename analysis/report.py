"""The report command: `python -m optsweep.analysis.report EXPERIMENT_DIR` (re)writes EXPERIMENT_DIR/report/.

A missing directory, one without a Ray Tune experiment, or a trial whose config holds a word where a
number belongs is a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from optsweep.analysis.config_check import BadConfigError
from optsweep.analysis.reporting import write_report
from optsweep.analysis.tune_files import NotAnExperimentError


def main(argv: Sequence[str] | None = None, prog: str = "python -m optsweep.analysis.report") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write EXPERIMENT_DIR/report/ (tables, plots, report.md, report.html) of an experiment.",
    )
    parser.add_argument("experiment_dir", help="experiment directory (one Ray Tune experiment per optimizer)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.experiment_dir)
    except (FileNotFoundError, NotAnExperimentError, BadConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
