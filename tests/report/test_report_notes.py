"""Absent metrics and scorecard notes: the report says what was not measured and never warns about it."""

from __future__ import annotations

import warnings

from harness.report import render, tables, verdict

NO_HELDOUT = "overfit: no held-out pairs, so held-out accuracy, acc_gap and ... are not measured"


def test_absent_metrics_raise_no_warning_and_notes_are_shown(make_trial, make_study) -> None:
    partial = {"overfit.train_acc": 1.0, "overfit.kl_ref": 0.05, "identity.logprob_margin": 2.0}
    trials = [
        make_trial(0, 0.9, scores={**partial, "identity.logprob_margin_delta": 3.0}, score_notes=[NO_HELDOUT]),
        make_trial(1, 0.5, scores={"shortcut.swap_acc": 0.5}, score_notes=[]),  # a different subset of metrics
    ]
    study = make_study(trials, base_notes=["bench.retention leaves out t: <b>no</b> base score"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy, plotly, jinja: nothing may complain about a missing value
        chosen = verdict.pick(study)
        assessed = verdict.assess(study, chosen)
        tables.leaderboard(study, chosen)
        html = render.page([study], [assessed])
    assert assessed.flags == [], "a metric that was not measured raises no probe warning"
    assert assessed.notes == [
        f"trial 0: {NO_HELDOUT}",
        "base model: bench.retention leaves out t: <b>no</b> base score",
    ]
    assert "Scorecard notes" in html and "trial 0: overfit: no held-out pairs" in html
    assert "&lt;b&gt;no&lt;/b&gt;" in html, "notes are escaped like everything from data"
    delta = next(r for r in assessed.rows if r.metric == "identity.logprob_margin_delta")
    assert delta.base == 0.0 and delta.recommended == 3.0, "the base model's change against itself is 0"


def test_a_study_without_notes_shows_none(make_trial, make_study) -> None:
    study = make_study([make_trial(0, 0.9), make_trial(1, 0.2)])
    assessed = verdict.assess(study, verdict.pick(study))
    assert assessed.notes == [] and "Scorecard notes" not in render.page([study], [assessed])


def test_a_curve_mlflow_cannot_serve_is_left_out_and_said(make_trial, make_study) -> None:
    """One failed history read (a locked database, a server hiccup) costs that curve, not the whole report."""
    from types import SimpleNamespace

    from harness.report.data import Runs

    def run(run_id: str, number: int) -> SimpleNamespace:
        data = SimpleNamespace(tags={"harness.trial": str(number)}, metrics={"loss": 0.5})
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, status="RUNNING"), data=data)

    def history(run_id: str, key: str) -> list:
        if run_id == "b":
            raise ConnectionError("database is locked\nmore detail")
        return [SimpleNamespace(step=s, value=v, timestamp=t) for s, v, t in ((2, 0.5, 2), (1, 0.75, 1))]

    study = make_study([make_trial(0, 0.9, run_id="a"), make_trial(1, 0.5, run_id="b")])
    client = SimpleNamespace(get_metric_history=history)
    Runs("uri", client, None, {"a": run("a", 0), "b": run("b", 1)}).fill(study)
    assert study.trials[0].curves == {"loss": [(1, 0.75), (2, 0.5)]}
    assert study.trials[1].curves == {}
    said = "1 learning curve(s) could not be read from MLflow (ConnectionError: database is locked); they are not drawn"
    assert said in study.notes


def test_a_resumed_trainings_curve_keeps_the_last_point_of_each_step(make_trial, make_study) -> None:
    """A training resumed from its checkpoint at step 4 logs steps 6 and 8 again (the first attempt had got to 8
    before it stopped): the curve shows each step once, as last logged."""
    from types import SimpleNamespace

    from harness.report.data import Runs

    logged = [(2, 0.9, 1), (4, 0.8, 2), (6, 0.7, 3), (8, 0.6, 4), (6, 0.65, 5), (8, 0.55, 6), (10, 0.5, 7)]
    data = SimpleNamespace(tags={"harness.trial": "0"}, metrics={"loss": 0.5})
    run = SimpleNamespace(info=SimpleNamespace(run_id="a", status="FINISHED"), data=data)
    points = [SimpleNamespace(step=s, value=v, timestamp=t) for s, v, t in logged]
    client = SimpleNamespace(get_metric_history=lambda run_id, key: points)
    study = make_study([make_trial(0, 0.9, run_id="a")])
    Runs("resumed-uri", client, None, {"a": run}).fill(study)
    assert study.trials[0].curves["loss"] == [(2, 0.9), (4, 0.8), (6, 0.65), (8, 0.55), (10, 0.5)]
