"""Send a study where teams look: TensorBoard, MLflow, Weights & Biases (`--log-to`).

Every backend is Ray Tune's own logger callback (TBXLoggerCallback, MLflowLoggerCallback, WandbLoggerCallback,
subclassed in `sweeps.monitoring.tracking_callbacks`, which only a study that logs imports) on the driver,
which sees every result of every trial whatever runs it (the single-worker fast path or a multi-worker
TorchTrainer), plus two things of ours:

- each trial's run carries its identity (optimizer, seed, configuration id as in the report,
  hyperparameters), so a UI can group the seeds of a configuration and compare optimizers;
- at the end, one study-level run holds the summary (best configuration per optimizer, mean,
  interval, verdict), the study's settings and the report's files (plots, tables, report.html).

Where each backend writes by default (local storage): TensorBoard event files in every trial's
directory plus `<experiment>/tensorboard-study/`; MLflow a SQLite store `<experiment>/mlflow.db` with
artifacts in `<experiment>/mlflow-artifacts/` (`--tracking-uri` for a server); W&B `<experiment>/wandb/`,
offline when no API key or no network is there (`wandb sync` uploads it later).

A backend that fails (package missing, server unreachable, any error inside it) costs one warning line
on stderr and is switched off for the rest of the study; it never costs a trial or a result.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import sys
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optsweep import catalog
from optsweep.vocabulary import STUDY_FILE, TARGET_RECORD_KEY, Target

if TYPE_CHECKING:
    import pandas as pd
    from ray import tune

    from optsweep.sweeps.spec import StudySpec

TENSORBOARD, MLFLOW, WANDB = catalog.TRACKING_BACKENDS
BACKENDS = catalog.TRACKING_BACKENDS
PACKAGES = {TENSORBOARD: "tensorboardX", MLFLOW: "mlflow", WANDB: "wandb"}
INSTALL_HINT = "pip install 'optsweep[tracking]'"

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow-artifacts"
TENSORBOARD_STUDY_DIR = "tensorboard-study"
STUDY_RUN_NAME = "study-summary"
TAG_PREFIX = "optsweep."
KIND_TAG, TRIAL_KIND, STUDY_KIND = "optsweep.kind", "trial", "study"
SERVER_TIMEOUT_S = 5.0


class StudyTracking:
    """The tracking of one study run: its backends, where they write, and which have failed."""

    def __init__(
        self,
        backends: tuple[str, ...],
        experiment_dir: str,
        *,
        tracking_uri: str | None = None,
    ) -> None:
        self.backends = backends
        self.experiment_dir = experiment_dir
        self.name = Path(experiment_dir.rstrip("/")).name
        self.is_remote = "://" in experiment_dir  # s3://, gs://, ...: nothing can be written there directly
        self.tracking_uri = tracking_uri
        self.failed: set[str] = set()
        self._checked = False

    # ----------------------------------------------------------------------------- failures
    def fail(self, backend: str, reason: str) -> None:
        """One warning line per backend and study; the backend is off from then on."""
        if backend in self.failed:
            return
        self.failed.add(backend)
        print(
            f"warning: --log-to {backend}: {reason}; the sweep goes on without {backend}",
            file=sys.stderr,
            flush=True,
        )

    def active(self) -> list[str]:
        self._check_once()
        return [backend for backend in self.backends if backend not in self.failed]

    def _check_once(self) -> None:
        """Missing packages and an unreachable MLflow server, found before the first trial."""
        if self._checked:
            return
        self._checked = True
        for backend in self.backends:
            try:
                importlib.import_module(PACKAGES[backend])
            except ImportError as error:
                self.fail(backend, f"{PACKAGES[backend]} is not installed ({error}); {INSTALL_HINT}")
        if MLFLOW in self.backends and MLFLOW not in self.failed:
            # MLflow logs each store migration at INFO on stderr; the progress lines should stay readable.
            logging.getLogger("mlflow").setLevel(logging.WARNING)
        if MLFLOW in self.backends and MLFLOW not in self.failed and _is_http(self.mlflow_uri):
            problem = _server_problem(self.mlflow_uri)
            if problem:
                self.fail(MLFLOW, f"the MLflow server {self.mlflow_uri} is unreachable ({problem})")
            else:
                # A server that dies mid-sweep must not stall the driver for minutes of retries.
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        if WANDB in self.backends and WANDB not in self.failed and self.wandb_mode == "offline":
            # Ray's callback checks for an API key unless the mode is offline in the environment.
            os.environ["WANDB_MODE"] = "offline"

    # ------------------------------------------------------------------------------ settings
    @property
    def mlflow_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{Path(self.experiment_dir).resolve() / MLFLOW_DB}"

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Artifacts beside the default SQLite store (a server decides its own)."""
        if self.tracking_uri:
            return None
        return (Path(self.experiment_dir).resolve() / MLFLOW_ARTIFACTS).as_uri()

    @property
    def wandb_dir(self) -> str | None:
        """W&B runs beside the trials; with s3/gs storage W&B's default (./wandb)."""
        return None if self.is_remote else str(Path(self.experiment_dir).resolve())

    @property
    def wandb_project(self) -> str:
        return os.environ.get("WANDB_PROJECT") or self.name

    @property
    def wandb_mode(self) -> str:
        """WANDB_MODE if set; online with an API key and a reachable server; offline otherwise."""
        if os.environ.get("WANDB_MODE"):
            return os.environ["WANDB_MODE"]
        if not _has_wandb_key():
            return "offline"
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        try:
            socket.create_connection((host.split(":")[0], 443), timeout=3).close()
        except OSError:
            return "offline"
        return "online"

    # ------------------------------------------------------------------------------ per trial
    def callbacks(self) -> list[tune.Callback]:
        """One Tune callback per working backend, for one optimizer's Tuner."""
        active = self.active()
        if not active:
            return []
        # Ray's logger callbacks import their backend's package (MLflow and W&B take seconds to import):
        # only a study that logs somewhere pays for them.
        from optsweep.sweeps.monitoring.tracking_callbacks import CALLBACKS

        built = []
        for backend in active:
            try:
                built.append(CALLBACKS[backend](self))
            except Exception as error:
                self.fail(backend, describe_error(error))
        return built

    # ----------------------------------------------------------------------------- the study
    def log_study(self, report_dir: str | os.PathLike[str]) -> None:
        """The study-level run of every working backend: summary, verdict, settings, report files."""
        active = self.active()
        if not active:
            return
        import pandas as pd

        from optsweep import analysis

        report = Path(report_dir)
        try:
            summary = pd.read_csv(report / "summary.csv")
            # The report's parent is the experiment (a local copy of it with s3/gs storage).
            settings = _read_settings(report.parent / STUDY_FILE)
            target = Target.from_json(settings.get(TARGET_RECORD_KEY))
            study = StudySummary(
                name=self.name,
                verdict=analysis.verdict(summary, target=target),
                summary=summary,
                settings=settings,
                files=sorted(p for p in report.iterdir() if p.is_file()),
                local_root=report.parent,
            )
        except Exception as error:  # no study-level run without its summary; the trials' runs stay
            for backend in active:
                self.fail(backend, f"the study summary could not be read ({describe_error(error)})")
            return
        writers = {TENSORBOARD: self._tensorboard_study, MLFLOW: self._mlflow_study, WANDB: self._wandb_study}
        for backend in active:
            try:
                writers[backend](study)
            except Exception as error:
                self.fail(backend, describe_error(error))

    def _tensorboard_study(self, study: StudySummary) -> None:
        from matplotlib.image import imread
        from tensorboardX import SummaryWriter

        from optsweep.analysis.markdown import markdown_table

        local = study.local_root / TENSORBOARD_STUDY_DIR
        with SummaryWriter(str(local)) as writer:
            writer.add_text("verdict", study.verdict)
            table = markdown_table(list(study.summary.columns), study.summary.astype(str).values.tolist())
            writer.add_text("summary", table)
            writer.add_text("settings", "```\n" + json.dumps(study.settings, indent=2) + "\n```")
            for key, value in study.metrics().items():
                writer.add_scalar(f"summary/{key}", value)
            for path in study.figures():
                writer.add_image(f"report/{path.stem}", imread(path)[..., :3], dataformats="HWC")
        if self.is_remote:  # written into the local copy of the experiment: send it where the trials are
            import pyarrow.fs

            fs, root = pyarrow.fs.FileSystem.from_uri(self.experiment_dir)
            destination = f"{root.rstrip('/')}/{TENSORBOARD_STUDY_DIR}"
            fs.create_dir(destination, recursive=True)
            pyarrow.fs.copy_files(str(local), destination, destination_filesystem=fs)

    def _mlflow_study(self, study: StudySummary) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(self.mlflow_uri)
        experiment_id = ensure_mlflow_experiment(client, self.name, self.mlflow_artifact_location)
        tags = {KIND_TAG: STUDY_KIND, f"{TAG_PREFIX}verdict": study.verdict[:5000]}
        run_id = client.create_run(experiment_id, run_name=STUDY_RUN_NAME, tags=tags).info.run_id
        for key, value in {**study.flat_settings(), **study.params()}.items():
            client.log_param(run_id, key, value[:6000])
        for key, value in study.metrics().items():
            client.log_metric(run_id, key, value)
        for path in study.files:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id)

    def _wandb_study(self, study: StudySummary) -> None:
        import wandb

        run = wandb.init(
            project=self.wandb_project,
            dir=self.wandb_dir,
            mode=self.wandb_mode,
            name=STUDY_RUN_NAME,
            job_type=STUDY_KIND,
            config=study.settings,
            settings=wandb.Settings(silent=True),
            reinit="create_new",
        )
        try:
            run.log(
                {
                    "summary": wandb.Table(dataframe=study.summary.astype(str)),
                    **{f"report/{p.stem}": wandb.Image(str(p)) for p in study.figures()},
                }
            )
            run.summary.update({"verdict": study.verdict, **study.metrics(), **study.params()})
        finally:
            run.finish()
            wandb.teardown()  # the run is on disk when the sweep returns


class StudySummary:
    """What the study-level run holds, read from the report directory and study.json."""

    def __init__(
        self,
        name: str,
        verdict: str,
        summary: pd.DataFrame,
        settings: dict[str, Any],
        files: list[Path],
        local_root: Path,
    ) -> None:
        self.name = name
        self.verdict = verdict
        self.summary = summary
        self.settings = settings
        self.files = files
        self.local_root = local_root

    def figures(self) -> list[Path]:
        return [path for path in self.files if path.suffix == ".png"]

    def _cells(self) -> list[tuple[str, str, Any]]:
        rows = []
        for _, row in self.summary.iterrows():
            optimizer = str(row.iloc[0])
            for column in self.summary.columns[1:]:
                rows.append((optimizer, str(column), row[column]))
        return rows

    def metrics(self) -> dict[str, float]:
        """Every finite number of the summary table as ``<optimizer>/<column>``."""
        import math

        return {
            f"{optimizer}/{column}": float(value)
            for optimizer, column, value in self._cells()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        }

    def params(self) -> dict[str, str]:
        """Every text cell of the summary table (best configuration id, schedule, ...)."""
        return {
            f"{optimizer}/{column}": str(value)
            for optimizer, column, value in self._cells()
            if isinstance(value, str | bool)
        }

    def flat_settings(self) -> dict[str, str]:
        return {f"study/{key}": json.dumps(value) for key, value in self.settings.items()}


# ------------------------------------------------------------------------------------ helpers
# By identity (a StudySpec may hold dicts, so it is not hashable); an entry lives as long as its args.
_studies: dict[int, StudyTracking] = {}


def for_study(args: StudySpec) -> StudyTracking:
    """The tracking of this study run (one object per parsed arguments, so a backend that failed for
    one optimizer stays off, and silent, for the next)."""
    key = id(args)
    if key not in _studies:
        _studies[key] = StudyTracking(tuple(args.log_to), args.experiment_dir, tracking_uri=args.tracking_uri)
        weakref.finalize(args, _studies.pop, key, None)
    return _studies[key]


def ensure_mlflow_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _server_problem(uri: str) -> str | None:
    """None when an MLflow server answers at `uri`, else what went wrong."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as error:  # it answered: a server is there, health may be elsewhere
        return None if error.code < 500 else f"HTTP {error.code}"
    except (OSError, ValueError) as error:
        return str(getattr(error, "reason", error))


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def describe_error(error: BaseException) -> str:
    """The error on one line (a multi-line message is joined, then cut at 300 characters)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
