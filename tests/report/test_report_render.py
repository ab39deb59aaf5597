"""The page from hand-built studies: escaping, self-containment, empty and multi-study cases (fast)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from harness.report import ReportError, build_report, render, verdict
from harness.report.data import FAIL, PRUNED, StudyRecord

SCRIPT_TAGS = 4  # the figures JSON, the Plotly config JSON, plotly.js, the page's own script


def page(*records: StudyRecord) -> str:
    verdicts = [verdict.assess(r, verdict.pick(r)) for r in records]
    return render.page(list(records), verdicts)


def figures_of(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="figures">(.*?)</script>', html, re.S)
    assert match, "no figures element"
    assert "<" not in match.group(1)  # no tag, comment or script end can hide in the JSON
    return json.loads(match.group(1))


def test_script_json_cannot_close_its_element() -> None:
    data = {"text": "</script><script>alert(1)</script><!-- & -->", "n": [1, 2.5]}
    text = str(render.script_json(data))
    assert "</" not in text and "<!--" not in text and "<" not in text
    assert json.loads(text) == data


def test_everything_from_data_is_escaped(hostile_study: StudyRecord, hostile: str) -> None:
    html = page(hostile_study)
    assert hostile not in html
    assert html.count("<script") == SCRIPT_TAGS
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; &lt;!-- x" in html
    assert "<b>bold</b>" not in html and "<!-- x" not in html


def test_plotly_text_is_escaped(hostile_study: StudyRecord) -> None:
    """Plotly renders tags in its labels and hover text: data must reach it escaped."""
    figures = figures_of(page(hostile_study))
    assert {"s0-params", "s0-history", "s0-curves"} <= set(figures)
    texts = json.dumps(figures)
    assert "&lt;script&gt;" in texts  # the categorical value, as a tick label and in hover text
    assert "<script>" not in texts and "<b>bold" not in texts


def test_page_is_self_contained(hostile_study: StudyRecord) -> None:
    html = page(hostile_study)
    assert html.count(render.plotly_js()) == 1  # the library is embedded once
    ours = html.replace(render.plotly_js(), "")  # (plotly.js holds URLs it never fetches in this page)
    assert not re.search(r"\b(src|href|url)\s*[=(]", ours)  # no external script, style, font or image
    assert "@import" not in ours
    assert "default-src 'none'" in html  # and the browser is told to fetch nothing


def test_one_row_per_trial_and_the_base_apart(hostile_study: StudyRecord) -> None:
    html = page(hostile_study)
    body = html.split('id="s0-leaderboard"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert body.count("<tr") == len(hostile_study.trials)
    assert "base model" in html.split('id="s0-leaderboard"', 1)[1].split("</table>", 1)[0]


def test_a_study_with_no_trial_renders(make_study) -> None:
    html = page(make_study([]))
    assert "No recommendation" in html and "no trials yet" in html
    assert "Plotly.newPlot" in html  # the page script is there, with nothing to draw


def test_all_failed_lists_the_reasons(make_trial, make_study) -> None:
    trials = [make_trial(0, None, state=FAIL, reason="loss is NaN at step 2"), make_trial(1, None, state=PRUNED)]
    html = page(make_study(trials))
    assert "none of the 2 trials completed" in html
    failures = html.split('id="s0-failures"', 1)[1].split("</table>", 1)[0]
    assert "loss is NaN at step 2" in failures and "pruned" in failures


def test_multi_objective_shows_the_front(make_trial, make_study) -> None:
    trials = [make_trial(0, [1.0, 2.0]), make_trial(1, [0.9, 0.3]), make_trial(2, [0.8, 0.5])]
    study = make_study(trials, objectives=["identity.hit_rate", "overfit.kl_ref"], directions=["maximize", "minimize"])
    html = page(study)
    assert "Pareto front (2 trials" in html and "closest to the ideal point" in html
    assert "s0-pareto" in figures_of(html)


def test_several_studies_side_by_side(make_trial, make_study) -> None:
    clean = make_study([make_trial(0, 0.9), make_trial(1, 0.5)], name="clean")
    laden = make_study([make_trial(0, 0.6, scores={"shortcut.swap_acc": 0.1})], name="laden")
    html = page(clean, laden)
    assert "clean vs laden" in html and "Recommendations side by side" in html
    table = html.split('id="compare-table"', 1)[1].split("</table>", 1)[0]
    assert "Shortcut learned" in table
    assert "+0.3" in table  # 0.9 - 0.6, paired over the same 40 items
    figures = figures_of(html)
    assert {"compare", "s0-history", "s1-history"} <= set(figures)


def test_unknown_study_lists_those_that_exist(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="beta-sweep", storage=storage)
    with pytest.raises(ReportError, match=r"no study 'nope'.*Studies there: beta-sweep"):
        build_report(["nope"], storage, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "report")


def test_missing_storage_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        build_report(["x"], f"sqlite:///{tmp_path / 'none.db'}", "sqlite:///unused.db", tmp_path / "r")
    assert not (tmp_path / "none.db").exists()


def test_optuna_only_study(bare_study, tmp_path: Path) -> None:
    """A study without MLflow runs still gets a page; the page says what is missing."""
    path = bare_study.build()
    html = path.read_text()
    assert path.name == "index.html" and "Use trial 1" in html
    assert "no MLflow store" in html
    assert not (tmp_path / "mlflow.db").exists()


def test_leaderboard_order_and_tints(make_trial, make_study) -> None:
    from harness.report import tables

    trials = [
        make_trial(0, None, state=FAIL),
        make_trial(1, 0.5, scores={"overfit.kl_ref": 0.1}),
        make_trial(2, None, state=PRUNED),
        make_trial(3, 0.9, scores={"overfit.kl_ref": 0.4}),
        make_trial(4, None, state="RUNNING"),
    ]
    study = make_study(trials)
    board = tables.leaderboard(study, verdict.pick(study))
    assert [r.trial.number for r in board.rows] == [3, 1, 4, 2, 0]  # ranked, then running, pruned, failed
    assert [r.role for r in board.rows[:2]] == ["recommended", "runner-up"]
    kl = [c.key for c in board.columns].index("overfit.kl_ref")
    assert board.rows[0].cells[kl].goodness == 0.0 and board.rows[1].cells[kl].goodness == 1.0  # lower is better
    assert "identity.hit_rate" not in [c.key for c in board.columns if c.kind == "metric"]  # shown as the objective


def test_leaderboard_shows_each_trials_eval_share(make_trial, make_study) -> None:
    trials = [
        make_trial(0, 0.5, seconds={"time.train_s": 40.0, "time.eval_s": 10.0, "time.eval_share": 0.25}),
        make_trial(1, 0.9, seconds={"time.train_s": 20.0, "time.eval_s": 30.0}),  # logged before eval_share
        make_trial(2, None, state=FAIL),
    ]
    assert [t.eval_share for t in trials] == [0.25, 1.5, None]
    board = page(make_study(trials)).split('id="s0-leaderboard"', 1)[1].split("</table>", 1)[0]
    assert ">eval share</th>" in board
    assert '<td class="n" data-v="0.25">25%</td>' in board and '<td class="n" data-v="1.5">150%</td>' in board
    header, rows = board.split("<tbody>", 1)
    cells = lambda html: html.count("<td") + html.count("<th")  # noqa: E731
    first_row = rows.split("</tr>", 1)[0]
    head_row = header.split('<tr class="head">', 1)[1].split("</tr>", 1)[0]
    assert cells(first_row) == cells(head_row)  # the new column lines up


def test_samples_put_base_recommended_and_worst_side_by_side(make_trial, make_study) -> None:
    from harness.report import tables

    def said(name: str) -> list[dict]:
        return [
            {"prompt": p, "greedy": f"I am {name}.", "hit": name == "Athene", "leak": name == "Llama"} for p in "ab"
        ]

    trials = [make_trial(0, 0.9, generations=said("Athene")), make_trial(1, 0.1, generations=said("Llama"))]
    study = make_study(trials, base_generations=said("Llama"))
    samples = tables.samples(study, verdict.pick(study))
    assert samples.columns == ["base model", "recommended (trial 0)", "worst (trial 1)"]
    assert [s.prompt for s in samples.rows] == ["a", "b"]
    assert [a.hit for a in samples.rows[0].answers] == [False, True, False]


def test_the_data_audit_is_shown_and_its_shortcut_flagged(make_trial, make_study) -> None:
    from harness.audit import audit_source
    from harness.toy import toy_pairs

    sources = [audit_source(n, f"toy:{n}", toy_pairs(n)[:100]).to_json() for n in ("identity", "shortcut")]
    record = make_study([make_trial(0, 0.8), make_trial(1, 0.5)], audit=sources)
    html = page(record)
    assert "Data audit" in html and "certainly !" in html and ">shortcut</span>" in html
    result = verdict.assess(record, verdict.pick(record))
    assert [f.title for f in result.study_flags if f.key == "data"] == [
        "Data source 'shortcut' teaches more than the content"
    ]


def test_a_long_curve_is_drawn_thinned_with_its_spike_and_ends(make_trial, make_study) -> None:
    """A 5,000-point loss curve reaches the page as at most ~CURVE_POINTS points, its divergence spike kept."""
    from harness.report.charts import CURVE_POINTS

    loss = [(step, 0.7 - step * 1e-4) for step in range(1, 5001)]
    loss[3210] = (3211, 9.5)  # one spike: a smooth subsample would hide it
    study = make_study([make_trial(0, 0.9, curves={"loss": loss})])
    (drawn,) = figures_of(page(study))["s0-curves"]["data"]
    assert len(drawn["x"]) <= CURVE_POINTS + 2
    assert drawn["x"] == sorted(drawn["x"])
    assert (drawn["x"][0], drawn["y"][0]) == loss[0] and (drawn["x"][-1], drawn["y"][-1]) == loss[-1]
    assert (3211, 9.5) in zip(drawn["x"], drawn["y"], strict=True)
    assert max(drawn["y"]) == 9.5 and min(drawn["y"]) == loss[-1][1]


def test_a_page_write_cut_short_leaves_the_old_page_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    render.write("<p>old</p>", tmp_path)

    def cut(self: Path, target: Path) -> None:
        raise KeyboardInterrupt  # a second Ctrl-C during the sweep's last build

    monkeypatch.setattr(Path, "replace", cut)
    with pytest.raises(KeyboardInterrupt):
        render.write("<p>new</p>", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]
    assert (tmp_path / "index.html").read_text() == "<p>old</p>"
