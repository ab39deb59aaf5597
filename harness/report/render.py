"""The page: views of each study rendered through one Jinja2 template (autoescape on).

Figures travel as one JSON blob in a <script type="application/json"> element, with `<`, `>`
and `&` written as \\u escapes so no string in it can close the element or open a comment;
plotly.js is embedded once, from the Plotly package (no CDN).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from harness.progress import duration
from harness.report import charts, tables
from harness.report.data import StudyRecord
from harness.report.verdict import Verdict

# Chart ids, in the order the page shows them.
CHART_ORDER = ("params", "pareto", "history", "importance", "curves", "pruner")
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class StudyView:
    id: str  # prefix of the study's element ids
    record: StudyRecord
    verdict: Verdict
    facts: tables.Facts
    board: tables.Leaderboard
    samples: tables.Samples | None
    failures: list
    charts: list[str] = field(default_factory=list)  # figure element ids, in page order


def study_view(index: int, record: StudyRecord, verdict: Verdict, figures: dict[str, Any]) -> StudyView:
    prefix = f"s{index}"
    pick = verdict.pick
    view = StudyView(
        id=prefix,
        record=record,
        verdict=verdict,
        facts=tables.facts(record),
        board=tables.leaderboard(record, pick),
        samples=tables.samples(record, pick),
        failures=tables.failures(record),
    )
    for name, fig in charts.figures(record, pick).items():
        figures[f"{prefix}-{name}"] = fig
    view.charts = [f"{prefix}-{name}" for name in CHART_ORDER if f"{prefix}-{name}" in figures]
    return view


def page(records: list[StudyRecord], verdicts: list[Verdict]) -> str:
    figures: dict[str, Any] = {}
    views = [study_view(i, r, v, figures) for i, (r, v) in enumerate(zip(records, verdicts, strict=True))]
    compare = tables.comparison(records, verdicts) if len(records) > 1 else []
    if len(records) > 1:
        fig = charts.comparison(records, [v.pick for v in verdicts])
        if fig is not None:
            figures["compare"] = fig
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            views=views,
            compare=compare,
            has_compare_chart="compare" in figures,
            generated=datetime.now().astimezone(),
            figures_json=script_json({k: _figure(f) for k, f in figures.items()}),
            plotly_js=Markup(plotly_js()) if figures else "",
        )
    )


def write(html: str, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "index.html"
    # per writer: workers may share the folder, and after a second Ctrl-C two threads of one may write
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}.tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)  # atomic: a browser refreshing mid-sweep never sees half a page
    finally:
        tmp.unlink(missing_ok=True)  # a write cut short (disk full, a second Ctrl-C) leaves nothing behind
    return path


def script_json(data: Any) -> Markup:
    """JSON safe inside <script>: `</script>` and `<!--` cannot occur in the output."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _figure(fig: Any) -> dict[str, Any]:
    return json.loads(fig.to_json(validate=False))  # Plotly's encoder knows its own types


@functools.cache
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@functools.cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("harness.report", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters |= {"num": num, "signed": signed, "duration": duration, "when": when, "pct": pct}
    env.globals["plotly_config"] = script_json(PLOTLY_CONFIG)
    return env


# ---------------------------------------------------------------- formatting


def num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    if value != value:
        return "NaN"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.2e}"
    return f"{value:.3g}"


def signed(value: float | None) -> str:
    return "—" if value is None else ("+" if value >= 0 else "") + num(value)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M")
