"""The `optsweep` command:

    optsweep run [STUDY.yaml] [flags]    run (or resume) a study: the file's settings, flags override them;
                                         without a file, the headline study (Adam vs SGD on digits)
    optsweep report EXPERIMENT_DIR       (re)write an experiment's report/ (tables, plots, report.html)
    optsweep --help                      this text; `optsweep run --help` lists every flag

A bad value is one line (`error: ...`) and exit 2, before anything starts. The command sits on the
Python API (`optsweep.Study`), as `python sweeps/adam_vs_sgd.py` and `python -m sweeps STUDY.yaml` do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from optsweep.sweeps import startup

USAGE = "usage: optsweep {run,report} ...  (optsweep --help)"
RUN_PROG = "optsweep run [STUDY.yaml]"
RUN_DESCRIPTION = (
    "Run (or resume) a study: the study file's settings (or, without one, the headline study: Adam vs SGD "
    "on digits), overridden by the flags below. Running the same command again resumes it."
)
HEADLINE_NAME = "adam_vs_sgd"


def entry() -> None:
    """The installed `optsweep` command (a script: a signal ends it with one line, see sweeps.startup)."""
    startup.begin()
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """The command with `argv` (default: the process's); its exit code. Callable in-process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command in ("-h", "--help"):
        print(__doc__)
        return 0
    if command == "run":
        return run(rest)
    if command == "report":
        from optsweep.analysis import report

        return report.main(rest, prog="optsweep report")
    from optsweep.sweeps import cli

    given = f"unknown command {command!r}; " if command else ""
    return cli.fail(f"{given}give run or report ({USAGE})")


def run(argv: list[str], *, prog: str = RUN_PROG) -> int:
    """`optsweep run [STUDY.yaml] [flags]`."""
    from optsweep.errors import OptsweepError
    from optsweep.sweeps import cli, study_file

    if argv and not argv[0].startswith("-"):
        path, flags = argv[0], argv[1:]
        file = Path(path).expanduser()
        try:  # checked with the flags over it: a flag may correct the file
            defaults = study_file.read(file)
            study_file.check_search_spaces(defaults.get("search_spaces", {}), file)
        except OptsweepError as error:
            return cli.fail(str(error))
        return cli.main(
            flags,
            prog=f"{prog.split(' [')[0]} {path}",
            description=RUN_DESCRIPTION,
            defaults=defaults,
            where=path,
        )
    return cli.main(argv, prog=prog, description=RUN_DESCRIPTION, defaults={"name": HEADLINE_NAME})


if __name__ == "__main__":
    entry()
