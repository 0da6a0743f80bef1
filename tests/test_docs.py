"""The documentation (issue 21, item 7): the MkDocs site builds with warnings as errors and its API
reference documents every public name; the README's links resolve; the flag reference names exactly
the flags of `--help`; every command in README.md and docs/ is run by a test or says why not."""

from __future__ import annotations

import html
import importlib
import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PYPROJECT = REPO / "pyproject.toml"
# docs/cluster.md's aws/ray commands are checked by tests/test_cluster_config.py (placeholders, the
# walk from `ray up` to `ray down`, the sweep command parsed by the real parser).
CLUSTER_PAGE = DOCS / "cluster.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


def _without_code_blocks(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)


# ------------------------------------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            "mkdocs.yml",
            "--site-dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert [line for line in log.splitlines() if "WARNING" in line] == []
    return out


@pytest.mark.timeout(300)
def test_the_site_builds_with_warnings_as_errors(site: Path) -> None:
    built = {p.relative_to(site).as_posix() for p in site.rglob("index.html")}
    expected = {
        "index.html"
        if page.stem == "index"
        else f"{page.relative_to(DOCS).with_suffix('').as_posix()}/index.html"
        for page in DOCS.rglob("*.md")
    }
    assert expected <= built


def _documented_anchors(module: ModuleType, name: str) -> set[str]:
    """Where a public name may be documented: where it is exported, or where it is defined."""
    anchors = {f"{module.__name__}.{name}"}
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        anchors.add(f"{obj.__module__}.{obj.__qualname__}")
    return anchors


def _text(page_html: str) -> str:
    """The page's text without markup or whitespace (tags split a sentence's words differently)."""
    return re.sub(r"\s", "", html.unescape(re.sub(r"<[^>]+>", "", page_html)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "page, module_name",
    [("study", "optsweep"), ("optimizers", "optsweep.optimizers"), ("analysis", "optsweep.analysis")],
)
def test_the_api_reference_documents_every_public_name(site: Path, page: str, module_name: str) -> None:
    page_html = (site / "reference" / page / "index.html").read_text()
    anchors = set(re.findall(r'id="([^"]+)"', page_html))
    module = importlib.import_module(module_name)
    assert [name for name in module.__all__ if not _documented_anchors(module, name) & anchors] == []
    text = _text(page_html)
    for name in module.__all__:  # the docstrings themselves, not only the headings
        obj = getattr(module, name)
        doc = inspect.getdoc(obj) if inspect.isclass(obj) or inspect.isfunction(obj) else None
        if doc and not doc.startswith(f"{obj.__name__}("):  # a dataclass's generated doc is no docstring
            first_paragraph = re.sub(r"[`*\s]", "", doc.split("\n\n")[0])[:60]
            assert first_paragraph in text, (name, first_paragraph)


# ------------------------------------------------------------------------------------ README's links


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub (and MkDocs' toc) give the headings of a Markdown file."""
    anchors = set()
    for line in _without_code_blocks(markdown).splitlines():
        if match := re.match(r"#{1,6}\s+(.*?)\s*$", line):
            title = match.group(1).lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def broken_links(markdown_file: Path) -> list[str]:
    """Each relative link whose file does not exist, or whose #anchor is no heading of that file."""
    markdown = markdown_file.read_text()
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code_blocks(markdown)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (markdown_file.parent / path).resolve() if path else markdown_file
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            problems.append(f"{target}: no heading with that anchor")
    return problems


def test_every_link_in_the_readme_resolves() -> None:
    assert broken_links(README) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading: `with code`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading-with-code) [ok](https://example.org/x) [ok](#mine)\n"
        "## Mine\n[bad](missing.md) [bad](there.md#no-such-heading)\n```\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "there.md#no-such-heading: no heading with that anchor",
    ]


# --------------------------------------------------------------------------------------- the flags


@pytest.fixture(scope="module")
def headline_help() -> str:
    done = subprocess.run(
        [sys.executable, "sweeps/adam_vs_sgd.py", "--help"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def flag_reference() -> set[str]:
    """The flags named in the first column of docs/command-line.md's table under '## Flags'."""
    section = (DOCS / "command-line.md").read_text().split("\n## Flags\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "docs/command-line.md lost its flag table"
    return {flag for row in rows for flag in FLAG.findall(row.split("|")[1])}


@pytest.mark.timeout(180)
def test_the_flag_reference_names_exactly_the_flags_of_help(headline_help: str) -> None:
    flags = set(FLAG.findall(headline_help)) - {"--help"}
    assert flag_reference() - flags == set(), "documented, but not a flag"
    assert flags - flag_reference() == set(), "a flag missing from docs/command-line.md's table"


@pytest.mark.timeout(180)
def test_documented_study_commands_use_real_flags(headline_help: str) -> None:
    flags = set(FLAG.findall(headline_help))
    for command, page in documented_commands():
        if command.startswith(("python sweeps/adam_vs_sgd.py", "optsweep run", "python -m sweeps")):
            assert set(FLAG.findall(command.replace("[--flags]", ""))) <= flags, (page, command)


@pytest.mark.timeout(180)
def test_python_m_sweeps_from_the_repository_root_answers_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sweeps", "--help"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "STUDY" in done.stdout.upper() or "study" in done.stdout


def _console_script_declared() -> bool:
    return re.search(r"(?ms)^\[project\.scripts\].*?^optsweep\s*=", PYPROJECT.read_text()) is not None


@pytest.mark.timeout(180)
def test_the_optsweep_command_answers_help() -> None:
    if not _console_script_declared():
        pytest.skip("pyproject.toml declares no `optsweep` console script yet ([project.scripts])")
    done = subprocess.run(
        ["optsweep", "--help"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run" in done.stdout and "report" in done.stdout


def test_the_study_file_shown_is_the_example_file() -> None:
    section = (DOCS / "command-line.md").read_text().split("\n## Study files\n", 1)[1]
    shown = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert shown is not None
    assert yaml.safe_load(shown.group(1)) == yaml.safe_load(
        (REPO / "examples" / "lion_vs_adam.yaml").read_text()
    )


# ------------------------------------------------------------------------------- every command


@dataclass(frozen=True)
class RunHere:
    """This file runs the command (or, where said, the command shrunk with --smoke)."""

    test: str


@dataclass(frozen=True)
class RunBy:
    """Another test runs it (`how`: in what form, where that differs from the documented line)."""

    file: str
    test: str
    how: str = ""


@dataclass(frozen=True)
class NotRun:
    why: str


CI = NotRun(".ci/run runs the install, `pytest` and `ruff check .` in a fresh virtualenv")
HEADLINE_SMOKE = RunBy("tests/test_sweep_e2e.py", "test_smoke_sweep_leaves_a_complete_report", "with --smoke")
HEADLINE_FILE, HEADLINE_TEST = HEADLINE_SMOKE.file, HEADLINE_SMOKE.test
COMMANDS: list[tuple[str, RunHere | RunBy | NotRun]] = [
    (r'pip install -e (\.|"\.\[(test|docs|tracking)\]")', CI),
    (r'pip install -e "\.\[test\]" && pytest|pytest( -m "not slow")?|ruff check \.', CI),
    (r"mkdocs build --strict", RunHere("test_the_site_builds_with_warnings_as_errors")),
    (
        r"mkdocs serve",
        NotRun("a server that runs until stopped; `mkdocs build --strict` builds the same site"),
    ),
    (r"python sweeps/adam_vs_sgd\.py( \[--flags\])?", HEADLINE_SMOKE),
    (r"python sweeps/adam_vs_sgd\.py --smoke", HEADLINE_SMOKE),
    (
        r"python sweeps/adam_vs_sgd\.py --help",
        RunHere("test_the_flag_reference_names_exactly_the_flags_of_help"),
    ),
    (
        r"python sweeps/adam_vs_sgd\.py --optimizers sgd,adam,lamb --num-samples 32 .*--search optuna",
        NotRun("a 32-configuration study per optimizer; its flags are checked against --help here"),
    ),
    (
        r"python sweeps/adam_vs_sgd\.py --dataset mnist --model cnn --data-dir ~/data",
        NotRun("downloads MNIST (CI has no network); its flags are checked against --help here"),
    ),
    (
        r"python sweeps/adam_vs_sgd\.py --optimizers adam,examples/lion\.py:Lion --smoke",
        RunHere("test_the_documented_lion_command_runs"),
    ),
    (
        r"python sweeps/adam_vs_sgd\.py --task examples/wine_classifier\.py:build_task --task-arg hidden=32",
        RunHere("test_the_documented_wine_task_command_runs"),
    ),
    (r"python examples/wine_classifier\.py --smoke", RunHere("test_the_documented_wine_script_runs")),
    (
        r"python compare_optimizers\.py",
        RunBy("tests/test_readme.py", "test_the_bring_your_own_model_example_runs_verbatim_outside_the_repo"),
    ),
    (r"optsweep --help", RunHere("test_the_optsweep_command_answers_help")),
    (
        r"python -m optsweep --help",
        RunBy("tests/test_import_cost.py", "test_help_imports_no_tracker_torchvision_or_sklearn"),
    ),
    (
        r"optsweep run \[--flags\]",
        RunBy(HEADLINE_FILE, HEADLINE_TEST, "as python sweeps/adam_vs_sgd.py --smoke (the same cli.main)"),
    ),
    (
        r"optsweep run optsweep_results/adam_vs_sgd/study\.yaml",
        RunBy(
            "tests/test_study_spec.py",
            "test_the_reproduce_command_reruns_the_study_from_an_empty_directory",
            "on a smoke study's study.yaml, from another empty directory",
        ),
    ),
    (
        r"python sweeps/adamw_decoupling\.py( --setting overfit)?",
        RunBy(
            "tests/test_adamw_decoupling.py",
            "test_the_smoke_study_trains_every_cell_fused_and_writes_the_analysis",
            "with --smoke",
        ),
    ),
    (
        r"python sweeps/adamw_decoupling\.py --setting cifar10 .*",
        NotRun("the full-scale run: a GPU cluster and CIFAR-10 (no network here)"),
    ),
    (
        r"python sweeps/lr_sensitivity\.py( --optimizers sgd,adam| --seeds 3 --name lr_sensitivity_3seeds)?",
        RunBy(
            "tests/test_lr_sensitivity.py",
            "test_the_smoke_study_trains_the_grid_confirms_and_writes_the_section",
            "with --smoke",
        ),
    ),
    (
        r"python sweeps/large_batch\.py",
        RunBy("tests/test_large_batch.py", "test_the_smoke_study_writes_its_section", "with --smoke"),
    ),
    (
        r"export RAY_AUTH_MODE=token|ray job submit .*python sweeps/large_batch\.py --full .*",
        NotRun("the full-scale run: a GPU cluster (cluster.yaml) and CIFAR-10 (no network here)"),
    ),
    (
        r"python -m optsweep\.analysis\.large_batch optsweep_results/large_batch",
        NotRun("re-reads a finished study's directory: the function the study script calls after the run"),
    ),
    (
        r"python -m optsweep\.analysis\.(decoupling|sensitivity) DIR",
        NotRun("re-reads a finished study's directory: the function the study scripts call after the run"),
    ),
    (
        r"optsweep run (STUDY\.yaml \[--flags\]|examples/lion_vs_adam\.yaml( --smoke)?)",
        RunBy(
            "tests/test_user_code_sweeps.py",
            "test_the_lion_study_file_runs_from_outside_the_repo",
            "as python -m optsweep.sweeps FILE --smoke",
        ),
    ),
    (
        r"python -m sweeps (STUDY\.yaml \[--flags\]|examples/lion_vs_adam\.yaml)",
        RunBy(
            "tests/test_user_code_sweeps.py",
            "test_the_lion_study_file_runs_from_outside_the_repo",
            "as python -m optsweep.sweeps FILE --smoke; `python -m sweeps --help` from the root runs here",
        ),
    ),
    (
        r"optsweep report DIR|python -m optsweep\.analysis\.report( DIR| <experiment dir>)?",
        RunBy("tests/test_analysis_report.py", "test_cli_regenerates_a_stored_experiment_without_ray"),
    ),
    (
        r"python sweeps/sync_vs_async\.py",
        RunBy("tests/test_sync_vs_async.py", "test_smoke_run_writes_the_comparison"),
    ),
    (
        r"python benchmarks/fused_trials\.py",
        RunBy(
            "tests/test_fused_benchmark.py",
            "test_quick_run_prints_a_row_per_k_and_the_headline",
            "--part b --quick",
        ),
    ),
    (
        r"python benchmarks/side_by_side\.py",
        RunBy("tests/test_benchmarks.py", "test_side_by_side_quick_mode_runs_both_orders", "--quick"),
    ),
    (
        r"python benchmarks/(optimizer_step|sweep_overhead|sharded_state)\.py",
        NotRun("minutes of timing on an idle machine; its --quick mode runs in test_benchmarks.py"),
    ),
]


def documented_commands() -> list[tuple[str, str]]:
    """(command, page) for every line of a shell block and every inline `python ...` in README.md and
    docs/ (docs/cluster.md aside), comments removed, continuation lines joined."""
    found = []
    for page in pages():
        if page == CLUSTER_PAGE:
            continue
        markdown = page.read_text()
        name = page.relative_to(REPO).as_posix()
        for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE):
            for line in block.replace("\\\n", " ").splitlines():
                command = re.split(r"\s+#", line, maxsplit=1)[0].strip()
                if command and not command.startswith("#"):
                    found.append((" ".join(command.split()), name))
        prose = _without_code_blocks(markdown).replace("\n", " ")
        found += [(" ".join(span.split()), name) for span in re.findall(r"`(python [^`]+)`", prose)]
    return found


def test_every_documented_command_is_run_by_a_test_or_says_why_not() -> None:
    commands = documented_commands()
    assert commands
    uncovered = [(c, p) for c, p in commands if not any(re.fullmatch(rule, c) for rule, _ in COMMANDS)]
    assert uncovered == [], "add each to COMMANDS: the test that runs it, or why none does"
    unused = [rule for rule, _ in COMMANDS if not any(re.fullmatch(rule, c) for c, _ in commands)]
    assert unused == [], "rules for commands the docs no longer show"
    this_file = Path(__file__).read_text()
    for rule, coverage in COMMANDS:
        if isinstance(coverage, RunHere):
            assert f"def {coverage.test}(" in this_file, rule
        elif isinstance(coverage, RunBy):
            assert f"def {coverage.test}(" in (REPO / coverage.file).read_text(), (rule, coverage)
    for command, page in commands:
        words = command.split()
        if words[0] == "python" and len(words) > 1 and "/" in words[1] and words[1].endswith(".py"):
            assert (REPO / words[1]).is_file(), (page, command)


# ------------------------------------------------ the documented example commands, run (Ray, slow)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    return done


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_the_documented_lion_command_runs(tmp_path: Path) -> None:
    _run(
        [
            "sweeps/adam_vs_sgd.py",
            "--optimizers",
            "adam,examples/lion.py:Lion",
            "--smoke",
            "--storage-path",
            str(tmp_path),
        ],
        REPO,
    )
    trials = pd.read_csv(tmp_path / "adam_vs_sgd-smoke" / "report" / "trials.csv")
    assert set(trials["optimizer"]) == {"adam", "lion"}


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_the_documented_wine_task_command_runs(tmp_path: Path) -> None:
    """The documented line with --smoke added (its full budget: 24 configurations x 3 seeds, 30 epochs)."""
    argv = [
        "sweeps/adam_vs_sgd.py",
        "--task",
        "examples/wine_classifier.py:build_task",
        "--task-arg",
        "hidden=32",
    ]
    _run([*argv, "--smoke", "--storage-path", str(tmp_path)], REPO)
    experiment = tmp_path / "adam_vs_sgd-smoke"
    study = (experiment / "study.json").read_text()
    assert "wine-resmlp" in study and '"hidden": 32' in study
    assert (experiment / "report" / "report.md").exists()


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_the_documented_wine_script_runs(tmp_path: Path) -> None:
    """`python examples/wine_classifier.py --smoke`, run from a directory of the user's own."""
    done = _run([str(REPO / "examples" / "wine_classifier.py"), "--smoke"], tmp_path)
    summary = pd.read_csv(tmp_path / "optsweep_results" / "wine-smoke" / "report" / "summary.csv")
    assert set(summary["optimizer"]) == {"adam", "adamw", "sgd"}
    assert "Report:" in done.stdout
