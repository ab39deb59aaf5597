"""Reports of real tiny sweeps (the CLI, TRL, Optuna, MLflow), opened in headless Chromium.

The studies are run once per session (tests/report/conftest.py::sweeps): a 1-trial study whose
identity names and prompts hold HTML, the same sweep on shortcut-laden data, an all-failed
study, a study with pruned trials and a two-objective one.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.report import ReportError, build_report

pytestmark = pytest.mark.slow

SCREENSHOTS = "screenshots"  # under the test's tmp dir


def report(sweeps, *studies: str, folder: Path) -> Path:
    return build_report(list(studies), sweeps.storage, sweeps.tracking, folder)


def states(sweeps, study: str) -> list[TrialState]:
    return [t.state for t in optuna.load_study(study_name=study, storage=sweeps.storage).trials]


def test_one_trial_study(sweeps, tmp_path: Path, check_page, hostile: str) -> None:
    assert states(sweeps, "solo") == [TrialState.COMPLETE], sweeps.logs["solo"]
    path = report(sweeps, "solo", folder=tmp_path / "solo")
    html = path.read_text()
    assert "Use trial 0" in html and "Only one complete trial" in html
    assert "solo.yaml" in html  # the spec as the user wrote it, in the header
    page = check_page(path, trials=1, screenshot=tmp_path / SCREENSHOTS / "solo.png").page
    body = page.inner_text("body")
    assert "<b>Athene</b> & co" in body  # the identity names, as text
    assert hostile in body  # the hostile held-out prompt, as text
    assert page.locator("#s0-samples tbody tr").count() == 8  # every held-out prompt, base vs recommended
    assert page.locator("#s0-curves .trace").count() >= 4  # the learning curves were drawn


def test_all_failed_study(sweeps, tmp_path: Path, check_page) -> None:
    assert states(sweeps, "allfail") == [TrialState.FAIL], sweeps.logs["allfail"]
    path = report(sweeps, "allfail", folder=tmp_path / "allfail")
    page = check_page(path, trials=1, screenshot=tmp_path / SCREENSHOTS / "allfail.png", charts=False).page
    assert "No recommendation" in page.inner_text("#s0-verdict")
    (trial,) = optuna.load_study(study_name="allfail", storage=sweeps.storage).trials
    shown = page.inner_text("#s0-failures")
    assert trial.user_attrs["fail_reason"].splitlines()[0] in shown and "learning_rate=1.00e+06" in shown


def test_pruned_study(sweeps, tmp_path: Path, check_page) -> None:
    found = states(sweeps, "pruned")
    complete, pruned = TrialState.COMPLETE, TrialState.PRUNED
    assert found == [complete, complete, pruned, pruned], sweeps.logs["pruned"]  # see the draws in conftest
    trials = optuna.load_study(study_name="pruned", storage=sweeps.storage).trials
    assert all(t.intermediate_values for t in trials), "every trial reports the pruner's metric as it trains"
    assert "pruned at step 5" in trials[2].user_attrs["fail_reason"]
    assert "PRUNED" in sweeps.logs["pruned"]
    runs = MlflowClient(sweeps.tracking).search_runs(
        [MlflowClient(sweeps.tracking).get_experiment_by_name("pruned").experiment_id]
    )
    states_in_mlflow = {
        r.data.tags.get("harness.trial"): (r.info.status, r.data.tags.get("harness.state")) for r in runs
    }
    assert states_in_mlflow["2"] == ("FINISHED", "PRUNED")
    path = report(sweeps, "pruned", folder=tmp_path / "pruned")
    page = check_page(path, trials=len(found), screenshot=tmp_path / SCREENSHOTS / "pruned.png").page
    failures = page.inner_text("#s0-failures")
    assert "pruned at step" in failures
    assert page.locator("#s0-pruner .trace").count() == len(found)  # what the pruner saw, per trial


def test_multi_objective_study(sweeps, tmp_path: Path, check_page) -> None:
    study = optuna.load_study(study_name="multi", storage=sweeps.storage)
    assert len(study.directions) == 2 and states(sweeps, "multi").count(TrialState.COMPLETE) == 3
    path = report(sweeps, "multi", folder=tmp_path / "multi")
    page = check_page(path, trials=3, screenshot=tmp_path / SCREENSHOTS / "multi.png").page
    verdict = page.inner_text("#s0-verdict")
    front = {t.number for t in study.best_trials}
    assert f"Pareto front ({len(front)} trial" in verdict and "ideal point" in verdict
    recommended = int(verdict.split("Use trial ", 1)[1].split()[0])
    assert recommended in front  # the recommendation is on Optuna's own front
    assert page.locator("#s0-pareto .trace").count() >= 1


def test_two_studies_side_by_side(sweeps, tmp_path: Path, check_page) -> None:
    path = report(sweeps, "solo", "shortcut", folder=tmp_path / "compare")
    page = check_page(path, trials=2, screenshot=tmp_path / SCREENSHOTS / "compare.png").page
    assert page.locator("h1").inner_text() == "solo vs shortcut"
    table = page.inner_text("#compare-table")
    assert "shortcut.swap_acc" in table and "identity.hit_rate" in table
    assert page.locator("#compare .trace").count() == 2  # one strip per study


def test_unknown_study_names_the_existing_ones(sweeps, tmp_path: Path) -> None:
    with pytest.raises(ReportError) as caught:
        report(sweeps, "nope", folder=tmp_path / "nope")
    assert all(name in str(caught.value) for name in ("solo", "shortcut", "allfail", "pruned", "multi"))
