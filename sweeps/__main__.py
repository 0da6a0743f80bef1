"""`python -m sweeps STUDY.yaml [flags]`: run the study a file describes (see `sweeps.study_file`);
flags override the file's settings, `--smoke` shrinks it."""

from __future__ import annotations

import sys

from optsweep.sweeps import startup

if __name__ == "__main__":
    startup.begin()  # first: the imports below take seconds, and a Ctrl-C during them is one line

from optsweep.sweeps import cli, study, study_file

PROG = "python -m sweeps STUDY.yaml"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        if argv[:1] in (["-h"], ["--help"]):
            print(f"usage: {PROG} [flags]\n\n{__doc__}\nThe flags: python sweeps/adam_vs_sgd.py --help")
            return 0
        return cli.fail(
            f"give the study file first: {PROG} [flags] (flags alone: python sweeps/adam_vs_sgd.py)"
        )
    try:
        defaults = study_file.load(argv[0])
    except cli.UsageError as error:
        return cli.fail(str(error))
    prog = f"python -m sweeps {argv[0]}"
    return study.main(argv[1:], prog=prog, description=__doc__ or "", defaults=defaults)


if __name__ == "__main__":
    sys.exit(main())
