"""Decoupled weight decay (Loshchilov & Hutter, ICLR 2019, Fig. 2): with L2 regularisation Adam's best
weight decay moves with the learning rate; decoupled (AdamW), the two are close to separable.

    python sweeps/adamw_decoupling.py                     # digits: 5 lr x 6 decays x 3 seeds per optimizer
    python sweeps/adamw_decoupling.py --smoke             # 2 epochs, 1 seed: seconds of training
    python sweeps/adamw_decoupling.py --setting overfit   # a wide MLP on diabetes, 200 epochs
    python sweeps/adamw_decoupling.py --help              # every flag (cluster: --address auto)

An lr x weight-decay grid (search: grid, scheduler: fifo: every cell trains its full budget on every
seed) for `adam` (L2, coupled, as torch.optim.Adam) and `adamw` (decoupled, torch's parameterisation);
the settings are in the study file of the --setting (sweeps/adamw_decoupling*.yaml), the flags override
them. After the standard report, the decoupling analysis (`optsweep.analysis.decoupling`: both heatmaps,
the slope of log best decay against log lr with its seed-bootstrap interval, the difference of slopes,
and whether weight decay matters at all on the task) lands in <storage-path>/<name>/report/
adamw_decoupling.md. Settings: digits (the default; weight decay barely matters there), overfit (a
256-wide MLP on the 265 training rows of diabetes for 200 epochs: it overfits, decay matters), cifar10
(the paper's scale: ResNet-18 on CIFAR-10, 100 epochs, cosine; for a GPU cluster).
"""

from __future__ import annotations

import sys
from pathlib import Path

from optsweep.sweeps import startup

if __name__ == "__main__":
    startup.begin()  # first: the imports below take seconds, and a Ctrl-C during them is one line

from optsweep.errors import OptsweepError
from optsweep.sweeps import cli, study_file

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "digits": HERE / "adamw_decoupling.yaml",
    "overfit": HERE / "adamw_decoupling_overfit.yaml",
    "cifar10": HERE / "adamw_decoupling_cifar10.yaml",
}
PROG = "python sweeps/adamw_decoupling.py"
SETTING_FLAG = "--setting"


def split_setting(argv: list[str]) -> tuple[str, list[str]]:
    """The --setting (default digits) and the other flags; a one-line OptsweepError for a bad one."""
    setting, rest, i = "digits", [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == SETTING_FLAG or arg.startswith(SETTING_FLAG + "="):
            if "=" in arg:
                setting = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                setting, i = argv[i + 1], i + 1
            else:
                raise OptsweepError(f"{SETTING_FLAG} needs a value: {', '.join(SETTINGS)}")
        else:
            rest.append(arg)
        i += 1
    if setting not in SETTINGS:
        raise OptsweepError(f"{SETTING_FLAG} {setting!r} is invalid; allowed: {', '.join(SETTINGS)}")
    return setting, rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    description = (__doc__ or "").split("\n\n")[
        0
    ] + f" {SETTING_FLAG} {{{','.join(SETTINGS)}}} picks the setting."
    try:
        setting, flags = split_setting(argv)
        defaults = study_file.load(SETTINGS[setting])
    except OptsweepError as error:
        return cli.fail(str(error))
    where = str(SETTINGS[setting])
    code = cli.main(flags, prog=PROG, description=description, defaults=defaults, where=where)
    if code != 0:
        return code
    spec = cli.parse(flags, PROG, description, defaults, where=where)
    if spec.is_remote_storage:
        print(
            f"The decoupling analysis reads a local directory: copy {spec.experiment_dir} here and run "
            "python -m optsweep.analysis.decoupling DIR"
        )
        return 0
    from optsweep.analysis import decoupling

    try:
        path = decoupling.write(spec.experiment_dir)
    except ValueError as error:
        return cli.fail(str(error))
    print(f"Decoupling analysis: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
