"""The comparison report: one self-contained HTML page that says which settings won and whether to trust it.

    build_report(["beta-sweep"], storage, tracking_uri, Path("reports/beta-sweep"))

Flow: data (Optuna study + MLflow runs -> plain records) -> verdict (pick, noise, warnings)
-> charts + tables -> render (Jinja2 template, Plotly embedded once) -> index.html.
"""

from __future__ import annotations

from pathlib import Path

from harness.report.data import ReportError

__all__ = ["ReportError", "build_report"]


def build_report(studies: list[str], storage: str, tracking_uri: str, report_dir: Path) -> Path:
    """Write report_dir/index.html for one study, or one page comparing several side by side; return its path.

    Raises ReportError when a study (or a store) does not exist; the message lists the studies that do.
    """
    from harness.report import data, render, verdict

    if not studies:
        raise ReportError("no study named: give at least one study")
    records = [data.load_study(name, storage, tracking_uri) for name in studies]
    verdicts = []
    for record in records:
        pick = verdict.pick(record)
        data.attach_artifacts(record, pick.shown())
        verdicts.append(verdict.assess(record, pick))
    return render.write(render.page(records, verdicts), Path(report_dir))
