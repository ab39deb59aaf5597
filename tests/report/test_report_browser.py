"""A hand-built report in real headless Chromium: renders, sorts, runs nothing from data, fetches nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report import render, verdict
from harness.report.data import StudyRecord

pytestmark = pytest.mark.browser


def write_page(tmp_path: Path, *records: StudyRecord) -> Path:
    verdicts = [verdict.assess(r, verdict.pick(r)) for r in records]
    return render.write(render.page(list(records), verdicts), tmp_path / "report")


def test_hostile_page_in_chromium(tmp_path: Path, hostile_study: StudyRecord, hostile: str, check_page) -> None:
    path = write_page(tmp_path, hostile_study)
    page = check_page(path, trials=3, screenshot=tmp_path / "hostile.png").page
    body = page.inner_text("body")
    assert hostile in body  # shown as text: names, prompts, answers, reasons, the spec
    assert not page.evaluate("[...document.querySelectorAll('b')].some((b) => b.textContent === 'bold')")
    labels = page.locator(".js-plotly-plot text").all_text_contents()
    assert hostile in labels  # Plotly shows the categorical value as text too (a tick label)


def test_click_to_sort(tmp_path: Path, make_trial, make_study, check_page) -> None:
    trials = [make_trial(0, 0.2), make_trial(1, 0.9), make_trial(2, 0.5)]
    page = check_page(write_page(tmp_path, make_study(trials)), 3, tmp_path / "sort.png").page

    def order() -> list[str]:
        return page.locator("#s0-leaderboard tbody tr td:nth-child(2)").all_inner_texts()

    assert [t.rstrip(" ★") for t in order()] == ["1", "2", "0"]  # best first
    header = page.locator("#s0-leaderboard thead tr.head th", has_text="trial")
    header.click()
    assert [t.rstrip(" ★") for t in order()] == ["0", "1", "2"]
    header.click()
    assert [t.rstrip(" ★") for t in order()] == ["2", "1", "0"]


def test_empty_study_in_chromium(tmp_path: Path, make_study, check_page) -> None:
    check_page(write_page(tmp_path, make_study([])), trials=0, screenshot=tmp_path / "empty.png", charts=False)
