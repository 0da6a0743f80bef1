"""report.html: the report as one self-contained page to share (plots embedded, no other file needed).

The page is report.md turned into HTML (Python-Markdown, so both always say the same), with the
figures embedded as base64 data URIs, plus the study's settings (its study.json) and the command that
reruns it. Raw HTML in the Markdown (say, inside an error message) is shown as text, never executed.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
from pathlib import Path
from typing import Any

import markdown

from optsweep.vocabulary import STUDY_FILE, STUDY_YAML

RERUN_COMMAND = ("optsweep", "run")
_IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24;
       margin: 0; background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #d0d7de; padding-bottom: .4rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #e5e8eb; padding-bottom: .2rem; }
#verdict + p { font-size: 1.1rem; background: #eef6ff; border-left: 4px solid #1f6feb; padding: .7rem 1rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f0f2f4; }
tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: 1rem 0 .3rem; }
code, pre { font: .85rem/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: .7rem; overflow-x: auto;
      white-space: pre-wrap; }
footer { margin-top: 2rem; color: #57606a; font-size: .85rem; }
"""


def render_html(markdown_text: str, report_dir: Path, *, title: str, experiment_dir: Path) -> str:
    """The page for a report whose Markdown is `markdown_text` and whose figures lie in `report_dir`."""
    body = _markdown_to_html(markdown_text)
    body = _embed_images(body, report_dir)
    record = read_study_record(experiment_dir)
    sections = [body, _settings_section(record), _rerun_section(experiment_dir)]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + "\n<footer>Written by optsweep's analysis from "
        f"<code>{html.escape(str(experiment_dir))}</code>; trials.csv, summary.csv and tuning_budget.csv "
        "beside this page hold every number.</footer>\n</main>\n</body>\n</html>\n"
    )


def read_study_record(experiment_dir: Path) -> dict[str, Any]:
    """The study's settings as the sweep recorded them ({} for an experiment without a readable one)."""
    try:
        record = json.loads((Path(experiment_dir) / STUDY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def rerun_command(experiment_dir: Path) -> list[str] | None:
    """The command that reruns (or resumes) the study from any directory: `optsweep run` on the study file
    the sweep wrote beside its record (it names its own user-code directories); None without one."""
    study_yaml = Path(experiment_dir).resolve() / STUDY_YAML
    return [*RERUN_COMMAND, str(study_yaml)] if study_yaml.is_file() else None


def _markdown_to_html(text: str) -> str:
    converter = markdown.Markdown(extensions=["tables", "toc"], output_format="html")
    # Text from the data (hyperparameter values, error messages) must never become markup.
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return converter.convert(text)


def _embed_images(body: str, report_dir: Path) -> str:
    def data_uri(match: re.Match[str]) -> str:
        name = html.unescape(match.group(1))
        path = report_dir / name
        kind = _IMAGE_TYPES.get(path.suffix.lower())
        if "/" in name or kind is None or not path.is_file():
            return match.group(0)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:{kind};base64,{encoded}"'

    return re.sub(r'src="([^"]+)"', data_uri, body)


def _settings_section(record: dict[str, Any]) -> str:
    heading = '<h2 id="study-settings">Study settings</h2>'
    if not record:
        return heading + f"\n<p>No readable {STUDY_FILE} in the experiment directory.</p>"
    rows = "\n".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{_value_html(value)}</td></tr>"
        for key, value in record.items()
    )
    return f"{heading}\n<p>As recorded in {STUDY_FILE}: the study's identity.</p>\n<table>\n{rows}\n</table>"


def _value_html(value: Any) -> str:
    if isinstance(value, dict | list):
        text = json.dumps(value, indent=1 if isinstance(value, dict) and len(value) > 2 else None)
        return f"<pre>{html.escape(text)}</pre>" if "\n" in text else f"<code>{html.escape(text)}</code>"
    return html.escape("—" if value is None else str(value))


def _rerun_section(experiment_dir: Path) -> str:
    heading = '<h2 id="reproduce">Reproduce</h2>'
    argv = rerun_command(experiment_dir)
    if argv is None:
        return heading + (
            f"\n<p>No command: the experiment has no {STUDY_YAML}. A study whose task is a Task object, or "
            "whose optimizer is a class defined in the script that ran it, has none (give them as import "
            "paths to get one); so has an experiment written before study files existed.</p>"
        )
    return (
        f"{heading}\n<p>From any directory; in the same storage path it resumes this experiment (change "
        f"<code>name</code> in {STUDY_YAML} to repeat the study). Runtime flags such as "
        "<code>--address</code> or <code>--log-to</code> are yours to add.</p>\n"
        f'<pre id="rerun-command"><code>{html.escape(shlex.join(argv))}</code></pre>'
    )
