"""Where a study's Tune experiments live: one experiment per stage, every optimizer's trials in it.

    <storage>/<name>/study.json        the study's identity (`sweeps.record.identity`)
    <storage>/<name>/search/           the search: every optimizer's configurations x seeds
    <storage>/<name>/confirmation.json the configuration each optimizer's search chose
    <storage>/<name>/confirm/          the confirmation: each chosen configuration on fresh seeds
    <storage>/<name>/report/           the report

Studies written before optsweep 0.2 ran one Tune experiment per optimizer (`<name>/<optimizer>/`,
`<name>/<optimizer>-confirm/`). Their report still reads (the analysis reads every Tune experiment below
the study); a rerun of one is refused with a line saying what to do (`refuse_per_optimizer_layout`).
"""

from __future__ import annotations

import os

import pyarrow.fs

from optsweep.errors import OptsweepError
from optsweep.sweeps.record.study_record import TUNER_FILE

SEARCH = "search"
CONFIRM = "confirm"
STAGE_NAMES = {SEARCH: "search", CONFIRM: "confirmation"}
"""What the study's output calls the stage each experiment holds."""
RESERVED = (SEARCH, CONFIRM, "report")
"""Directory names in a study; no optimizer label may take them."""
_OLD_CONFIRM_SUFFIX = "-confirm"


def search_dir(experiment_dir: str) -> str:
    return f"{experiment_dir}/{SEARCH}"


def per_optimizer_experiments(experiment_dir: str, labels: list[str]) -> list[str]:
    """The Tune experiments of an older study (one per optimizer and stage) below `experiment_dir`."""
    uri = experiment_dir if "://" in experiment_dir else os.path.abspath(experiment_dir)
    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    names = [name for label in labels for name in (label, label + _OLD_CONFIRM_SUFFIX)]
    return [
        name
        for name in names
        if fs.get_file_info(f"{root}/{name}/{TUNER_FILE}").type == pyarrow.fs.FileType.File
    ]


def refuse_per_optimizer_layout(experiment_dir: str, labels: list[str]) -> None:
    """One line, before anything runs, for a study that an older optsweep ran one experiment per optimizer:
    this version cannot continue it (its trials, searcher and early-stopping state are per optimizer)."""
    old = per_optimizer_experiments(experiment_dir, labels)
    if old:
        raise OptsweepError(
            f"{experiment_dir} was run by an older optsweep, one Tune experiment per optimizer "
            f"({', '.join(old)}/); this version cannot continue it: `optsweep report {experiment_dir}` "
            "still reports it, and a new --name runs the study afresh"
        )
