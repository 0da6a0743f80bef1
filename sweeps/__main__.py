"""`python -m sweeps STUDY.yaml [flags]` (from the repository root): run the study a file describes, as
`optsweep run STUDY.yaml [flags]` does; flags override the file's settings, `--smoke` shrinks it."""

from __future__ import annotations

import sys

from optsweep import console

if __name__ == "__main__":
    console.startup.begin()  # first: the imports below take seconds, and a Ctrl-C during them is one line


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        if argv[:1] in (["-h"], ["--help"]):
            print(f"usage: python -m sweeps STUDY.yaml [flags]\n\n{__doc__}\nThe flags: optsweep run --help")
            return 0
        from optsweep.sweeps import cli

        return cli.fail(
            "give the study file first: python -m sweeps STUDY.yaml [flags] (or: optsweep run --help)"
        )
    return console.run(argv, prog="python -m sweeps STUDY.yaml")


if __name__ == "__main__":
    sys.exit(main())
