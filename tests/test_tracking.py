"""`--log-to tensorboard,mlflow,wandb`: a real smoke sweep logged to the real libraries and read back
with their own readers (TensorBoard's EventAccumulator, MlflowClient, W&B's run records), and backends
that fail (unreachable server, missing package, unusable store) cost one warning line, never a result."""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from optsweep import analysis
from optsweep.sweeps import adam_vs_sgd, cli
from optsweep.sweeps.monitoring import tracking

pytest.importorskip("mlflow", reason="the tracking extra is not installed: pip install -e '.[tracking]'")
pytest.importorskip("wandb", reason="the tracking extra is not installed: pip install -e '.[tracking]'")
pytest.importorskip("tensorboard", reason="the tracking extra is not installed: pip install -e '.[tracking]'")

NAME = "tracked"
SMOKE = ["--smoke", "--optimizers", "sgd,adam", "--name", NAME]


@dataclass
class Sweep:
    root: Path
    code: int
    err: str
    trials: pd.DataFrame
    summary: pd.DataFrame


def _run(storage: Path, *argv: str) -> Sweep:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        # The test decides nothing about W&B's mode: no API key here, so tracking must pick offline.
        mp.setenv("WANDB_MODE", "")
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("NETRC", str(storage / "no-netrc"))
        with contextlib.redirect_stderr(err):
            code = adam_vs_sgd.main([*SMOKE, *argv, "--storage-path", str(storage)])
    root = storage / NAME
    report = root / "report"
    return Sweep(
        root, code, err.getvalue(), pd.read_csv(report / "trials.csv"), pd.read_csv(report / "summary.csv")
    )


@pytest.fixture(scope="module")
def tracked(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return _run(tmp_path_factory.mktemp("tracked"), "--log-to", "tensorboard,mlflow,wandb")


def _event_dir(sweep: Sweep, row: pd.Series) -> Path:
    """Where TensorBoard's events of a trial are: its directory, or a fused member's in its group's."""
    directory = sweep.root / row["trial_dir"]
    _, _, member = str(row["trial_id"]).partition("-")
    return directory / f"member_{member}" if member else directory


def _trial_rows(sweep: Sweep) -> dict[str, pd.Series]:
    return {row["trial_id"]: row for _, row in sweep.trials.iterrows()}


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sweep_with_every_backend_succeeds_without_warnings(tracked: Sweep) -> None:
    assert tracked.code == 0, tracked.err
    assert "warning" not in tracked.err
    assert len(tracked.trials) == 2 * 2  # optimizers x configurations (1 seed)
    assert (tracked.root / "report" / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_tensorboard_event_files_hold_every_epoch_and_the_trial_identity(tracked: Sweep) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for _, row in tracked.trials.iterrows():
        events = EventAccumulator(str(_event_dir(tracked, row)), size_guidance={"tensors": 0})
        events.Reload()
        accuracy = events.Scalars("ray/tune/val_acc")
        assert [e.step for e in accuracy] == list(range(1, row["epochs"] + 1))
        content = events.PluginTagToContent("hparams")
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = {k: v.string_value or v.number_value for k, v in data.session_start_info.hparams.items()}
        assert hparams["config_id"] == row["config_id"]
        assert hparams["optimizer"] == row["optimizer"]
        assert hparams["trial_id"] == row["trial_id"]
        assert hparams["lr"] == pytest.approx(row["lr"])

    study = EventAccumulator(str(tracked.root / tracking.TENSORBOARD_STUDY_DIR), size_guidance={"tensors": 0})
    study.Reload()
    texts = {
        tag: study.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in study.Tags()["tensors"]
    }
    assert texts["verdict/text_summary"] == analysis.verdict(tracked.summary)
    figures = sorted(p.stem for p in (tracked.root / "report").glob("*.png"))
    assert figures and sorted(tag.removeprefix("report/") for tag in study.Tags()["images"]) == figures
    best = tracked.summary.iloc[0]
    assert study.Scalars(f"summary/{best['optimizer']}/mean")[0].value == pytest.approx(best["mean"])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_mlflow_store_holds_a_run_per_trial_and_the_study_run(tracked: Sweep) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked.root / tracking.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id])
    trial_runs = [r for r in runs if r.data.tags[tracking.KIND_TAG] == tracking.TRIAL_KIND]
    rows = _trial_rows(tracked)
    assert sorted(r.data.tags["optsweep.trial_id"] for r in trial_runs) == sorted(rows)
    for run in trial_runs:
        row = rows[run.data.tags["optsweep.trial_id"]]
        assert run.data.tags["optsweep.config_id"] == row["config_id"]
        assert run.data.tags["optsweep.optimizer"] == row["optimizer"]
        assert run.data.tags["optsweep.seed"] == str(row["seed"])
        assert run.info.run_name == f"{row['config_id']}-seed{row['seed']}"
        assert float(run.data.params["lr"]) == pytest.approx(row["lr"])
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, row["epochs"] + 1))
        assert max(m.value for m in history) == pytest.approx(row["best_val_acc"])
        assert run.info.status == "FINISHED"

    (study,) = [r for r in runs if r.data.tags[tracking.KIND_TAG] == tracking.STUDY_KIND]
    assert study.data.tags["optsweep.verdict"] == analysis.verdict(tracked.summary)
    for _, best in tracked.summary.iterrows():
        assert study.data.metrics[f"{best['optimizer']}/mean"] == pytest.approx(best["mean"])
        assert study.data.params[f"{best['optimizer']}/config_id"] == best["config_id"]
    assert study.data.params["study/num_samples"] == "2"
    artifacts = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"report.html", "report.md", "summary.csv", "learning_curves.png"} <= artifacts


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_wandb_offline_runs_are_grouped_by_configuration(tracked: Sweep) -> None:
    from wandb_records import read_run

    run_dirs = sorted((tracked.root / "wandb").glob("offline-run-*"))
    runs = [read_run(d) for d in run_dirs]
    trial_runs = {r.run_id: r for r in runs if r.job_type != tracking.STUDY_KIND}  # W&B run id = trial id
    rows = _trial_rows(tracked)
    assert sorted(trial_runs) == sorted(rows)
    for trial_id, run in trial_runs.items():
        row = rows[trial_id]
        assert run.name == f"{row['config_id']}-seed{row['seed']}"
        assert run.group == row["config_id"]
        assert run.job_type == row["optimizer"]
        assert run.project == NAME
        assert run.config["lr"] == pytest.approx(row["lr"])
        accuracy = [h["val_acc"] for h in run.history if "val_acc" in h]
        assert len(accuracy) == row["epochs"]
        assert max(accuracy) == pytest.approx(row["best_val_acc"])
    (study,) = [r for r in runs if r.job_type == tracking.STUDY_KIND]
    assert study.summary["verdict"] == analysis.verdict(tracked.summary)
    assert study.config["num_samples"] == 2


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_report_html_command_reruns_the_same_study(tracked: Sweep) -> None:
    from optsweep.sweeps import study_file
    from optsweep.sweeps.record import identity
    from optsweep.sweeps.runner.plan import prepare

    page = (tracked.root / "report" / "report.html").read_text()
    command = html.unescape(page.split('<pre id="rerun-command"><code>', 1)[1].split("</code>", 1)[0])
    program, subcommand, study_yaml = shlex.split(command)
    assert (program, subcommand, study_yaml) == ("optsweep", "run", str(tracked.root / "study.yaml"))
    args = study_file.load(study_yaml)
    assert args.experiment_dir == str(tracked.root)
    recorded = json.loads((tracked.root / "study.json").read_text())
    assert identity.differences(recorded, prepare(args).identity()) == []


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_multi_worker_trials_are_tracked_every_epoch(ray_session: None, tmp_path: Path) -> None:
    """A 2-worker TorchTrainer trial reports through Train to Tune: the driver's tracker sees it all."""
    from mlflow import MlflowClient

    one = ["--optimizers", "adam", "--num-samples", "1", "--scheduler", "fifo", "--workers-per-trial", "2"]
    sweep = _run(tmp_path, *one, "--log-to", "mlflow")
    assert sweep.code == 0, sweep.err
    (row,) = _trial_rows(sweep).values()
    client = MlflowClient(f"sqlite:///{sweep.root / tracking.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(NAME)
    (run,) = client.search_runs([experiment.experiment_id], f"tags.`{tracking.KIND_TAG}` = 'trial'")
    assert run.data.params["settings/workers"] == "2"
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2] == list(range(1, row["epochs"] + 1))
    assert max(m.value for m in history) == pytest.approx(row["best_val_acc"])


# ------------------------------------------------------------------------------------- failures
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_failing_backends_cost_one_warning_line_each_and_no_result(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    server = f"http://127.0.0.1:{_closed_port()}"
    sweep = _run(tmp_path, "--optimizers", "adam", "--log-to", "mlflow,wandb", "--tracking-uri", server)
    assert sweep.code == 0, sweep.err
    warnings = sorted(line for line in sweep.err.splitlines() if line.startswith("warning: --log-to"))
    assert len(warnings) == 2, sweep.err
    assert f"mlflow: the MLflow server {server} is unreachable" in warnings[0]
    assert "wandb: wandb is not installed" in warnings[1] and tracking.INSTALL_HINT in warnings[1]
    assert len(sweep.trials) == 2
    assert set(sweep.trials["status"]) <= {"completed", "stopped_early", "diverged"}
    assert (sweep.root / "report" / "report.html").is_file()


def test_an_error_inside_a_backend_is_one_warning_and_switches_it_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unusable = tmp_path / "file-not-dir"
    unusable.write_text("")
    study = tracking.StudyTracking(
        ("mlflow",), str(tmp_path), tracking_uri=f"sqlite:///{unusable}/x/mlflow.db"
    )
    (callback,) = study.callbacks()
    callback.setup()  # the store cannot be created: MLflow raises inside Tune's hook
    callback.on_trial_result(iteration=1, trials=[], trial=object(), result={"val_acc": 0.5})
    callback.on_experiment_end(trials=[])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --log-to mlflow: "), err
    assert study.callbacks() == []  # the next optimizer does not try again


def test_study_run_reaches_remote_storage(tmp_path: Path) -> None:
    """With s3/gs storage the report is made in a local copy; the study's TensorBoard run is sent to the
    storage (a file:// URI stands in for the bucket: the same pyarrow filesystem call)."""
    from analysis_fixtures import standard_experiment
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report_dir = analysis.write_report(standard_experiment(tmp_path / "local-copy" / "exp"))
    bucket = tmp_path / "bucket" / "exp"
    bucket.mkdir(parents=True)
    tracking.StudyTracking(("tensorboard",), bucket.as_uri()).log_study(report_dir)
    events = EventAccumulator(str(bucket / tracking.TENSORBOARD_STUDY_DIR), size_guidance={"tensors": 0})
    events.Reload()
    summary = analysis.summarize(analysis.load(report_dir.parent))
    verdict = events.Tensors("verdict/text_summary")[0].tensor_proto.string_val[0].decode()
    assert verdict == analysis.verdict(summary)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_tracking_server_gets_the_study_run(tmp_path: Path) -> None:
    """`--tracking-uri http://...`: a real `mlflow server` (one worker) receives the study-level run."""
    from analysis_fixtures import standard_experiment
    from mlflow import MlflowClient

    report_dir = analysis.write_report(standard_experiment(tmp_path / "exp"))
    uri = f"http://127.0.0.1:{_closed_port()}"
    store, port = f"sqlite:///{tmp_path / 'server.db'}", uri.rsplit(":", 1)[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--artifacts-destination",
         str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", port, "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while not _answers(f"{uri}/health"):
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(1)
        tracking.StudyTracking(("mlflow",), str(tmp_path / "exp"), tracking_uri=uri).log_study(report_dir)
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
        assert run.data.tags[tracking.KIND_TAG] == tracking.STUDY_KIND
        assert {"report.html", "summary.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


class _Trial:
    """What Ray's W&B callback reads of a Tune trial."""

    def __init__(self, root: Path) -> None:
        self.trial_id = "abc12_00000"
        self.config = {"optimizer": "adam", "seed": 0, "lr": 0.01}
        self.local_path = str(root)
        self.experiment_dir_name = "adam"

    def __str__(self) -> str:
        return f"run_trial_{self.trial_id}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_wandb_run_failing_in_its_actor_is_one_warning(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_MODE", "not-a-mode")  # wandb.init raises in Ray's logging actor
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    study = tracking.StudyTracking(("wandb",), str(tmp_path))
    (callback,) = study.callbacks()
    trial = _Trial(tmp_path)
    callback.setup()
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
    for epoch in (1, 2):
        result = {"val_acc": 0.5, "training_iteration": epoch}
        callback.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)
    callback.on_trial_complete(iteration=3, trials=[trial], trial=trial)
    callback.on_experiment_end(trials=[trial])
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning: --log-to")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: --log-to wandb: "), err
    assert "not-a-mode" in warnings[0]


# ------------------------------------------------------------------------------ command line
BAD_FLAGS = [
    (
        ["--log-to", "tensorboard,neptune"],
        "unknown tracking backend 'neptune' in --log-to; valid: tensorboard",
    ),
    (["--log-to", "mlflow,mlflow"], "--log-to lists mlflow more than once"),
    (
        ["--tracking-uri", "http://h:5000"],
        "--tracking-uri http://h:5000 is for MLflow: add mlflow to --log-to",
    ),
    (["--log-to", "mlflow", "--tracking-uri", "h:5000"], "--tracking-uri 'h:5000' is invalid"),
    (["--log-to", "mlflow", "--storage-path", "s3://bucket/x"], "needs --tracking-uri (an MLflow server)"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_tracking_flags_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--storage-path" not in argv:
        argv = [*argv, "--storage-path", str(tmp_path)]
    assert adam_vs_sgd.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_tracking_flags_parse() -> None:
    args = cli.parse(
        ["--log-to", "MLflow, wandb", "--tracking-uri", "http://127.0.0.1:5000"],
        "t",
        "t",
        adam_vs_sgd.DEFAULTS,
    )
    assert args.log_to == ("mlflow", "wandb")
    assert args.tracking_uri == "http://127.0.0.1:5000"
    assert cli.parse([], "t", "t", adam_vs_sgd.DEFAULTS).log_to == ()
