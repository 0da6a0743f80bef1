"""report.html: one self-contained page, rendered in a real headless Chromium (from the OS packages):
every figure loads, the verdict and the tables are there, and a small screenshot is not blank."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from analysis_fixtures import standard_experiment
from matplotlib.image import imread

from optsweep import analysis
from optsweep.analysis.html_report import render_html, rerun_command
from optsweep.vocabulary import STUDY_YAML

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER = next((path for name in BROWSERS if (path := shutil.which(name))), None)
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason=f"no headless browser ({', '.join(BROWSERS)}) on PATH; install one: apt-get install chromium",
)

# Appended to a copy of the page: once everything has loaded, write what a reader would see into the DOM
# (Chromium's --dump-dom prints the DOM after the load event and the scripts it triggers).
PROBE = """<script>
window.addEventListener("load", () => {
  const verdict = document.querySelector("#verdict + p");
  const report = {
    images: [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
                                           width: i.naturalWidth, inline: i.src.startsWith("data:image/")})),
    verdict: verdict ? verdict.textContent.trim() : null,
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent.trim()),
    tables: [...document.querySelectorAll("table")].map(t => t.rows.length),
    command: (document.querySelector("#rerun-command") || {}).textContent || null,
    scripts: document.scripts.length,
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    experiment = standard_experiment(tmp_path_factory.mktemp("html") / "exp")
    record = json.loads((experiment / "study.json").read_text())
    record.update(task="digits", optimizers={"adam": {"optimizer": "adam"}, "sgd": {"optimizer": "sgd"}})
    (experiment / "study.json").write_text(json.dumps({**record, "num_samples": 5, "seeds": 3}))
    (experiment / STUDY_YAML).write_text("name: exp\noptimizers: [adam, sgd]\n")
    return analysis.write_report(experiment)


def _chromium(*args: str) -> str:
    assert BROWSER is not None
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _alone(report_dir: Path, tmp_path: Path, extra: str = "") -> Path:
    """The page copied alone into an empty directory: it must not need anything beside it."""
    page = tmp_path / "shared-page.html"
    page.write_text((report_dir / "report.html").read_text().replace("</body>", extra + "</body>"))
    return page


@needs_browser
@pytest.mark.timeout(180)
def test_page_renders_with_every_figure_the_verdict_and_the_tables(report_dir: Path, tmp_path: Path) -> None:
    page = _alone(report_dir, tmp_path, PROBE)
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    probe = dom.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0]
    seen = json.loads(html.unescape(probe))

    markdown_text = (report_dir / "report.md").read_text()
    figures = sorted(p.name for p in report_dir.glob("*.png"))
    assert len(seen["images"]) == len(figures) == markdown_text.count(".png)") >= 4
    assert all(image["loaded"] and image["inline"] and image["width"] > 100 for image in seen["images"]), seen
    summary = analysis.summarize(analysis.load(report_dir.parent))
    assert seen["verdict"] == analysis.verdict(summary)
    # Every section and table of report.md is on the page, plus the study settings and the rerun command.
    sections = [line[3:] for line in markdown_text.splitlines() if line.startswith("## ")]
    assert seen["headings"] == [*sections, "Study settings", "Reproduce"]
    assert {"Verdict", "Best configuration per optimizer", "Figures", "Caveats"} <= set(sections)
    markdown_tables = sum(1 for line in markdown_text.splitlines() if line.startswith("| ---"))
    assert len(seen["tables"]) == markdown_tables + 1 >= 4
    assert all(rows >= 2 for rows in seen["tables"]), seen["tables"]  # a header and at least one row
    assert seen["command"] == f"optsweep run {report_dir.parent.resolve() / STUDY_YAML}"
    assert seen["scripts"] == 1  # only the probe: the page itself runs no script


@needs_browser
@pytest.mark.timeout(180)
def test_screenshot_is_a_real_page(report_dir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    _chromium("--window-size=800,600", f"--screenshot={shot}", _alone(report_dir, tmp_path).as_uri())
    pixels = imread(shot)
    assert pixels.shape[:2] == (600, 800)
    assert pixels[..., :3].std() > 0.05  # text, tables and a figure, not a blank or error page


def test_markup_from_the_data_is_shown_not_run(tmp_path: Path) -> None:
    text = (
        "# T\n\n## Caveats\n\n- 1 trial failed: <script>alert(1)</script> and <img src=x onerror=alert(2)>\n"
    )
    page = render_html(text, tmp_path, title="T <b>", experiment_dir=tmp_path)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<title>T &lt;b&gt;</title>" in page


def test_figures_are_embedded_and_the_page_stands_alone(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(list(report_dir.glob("*.png"))) >= 4
    assert 'src="http' not in page and 'href="http' not in page and '.png"' not in page


def test_the_rerun_command_runs_the_study_file_beside_the_record(tmp_path: Path) -> None:
    experiment = tmp_path / "results" / "my-study"
    experiment.mkdir(parents=True)
    assert rerun_command(experiment) is None  # a Task object's study, or one from before study files
    (experiment / STUDY_YAML).write_text("name: my-study\n")
    assert rerun_command(experiment) == ["optsweep", "run", str(experiment / STUDY_YAML)]
