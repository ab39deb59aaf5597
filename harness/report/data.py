"""What a sweep stored, gathered into plain dataclasses: the Optuna study and its MLflow runs.

Only Optuna's and MLflow's own APIs are used. Per-trial artifacts (eval items, generations)
are fetched on demand for the few trials the report shows in detail (`attach_artifacts`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.metrics import is_score
from harness.progress import first_line
from harness.stores import redact, sqlite_path
from harness.tracking import ROLE_TAG, STUDY_TAG, TRIAL_TAG

# Step metrics drawn as learning curves (TRL's names); eval_loss shows held-out behaviour too.
CURVE_METRICS = ("loss", "rewards/margins", "logps/chosen", "logps/rejected", "eval_loss")
COMPLETE, PRUNED, FAIL, RUNNING = "COMPLETE", "PRUNED", "FAIL", "RUNNING"
# MLflow serves one metric's history per request: read this many side by side (a report of 256 trials from
# a tracking server took 83 s reading them one by one, 20.5 s reading 8 at a time)
HISTORY_READS = 8
# What ended runs logged never changes: kept across calls, so a refresh after each trial reads only what is new.
_ENDED_HISTORIES: dict[tuple[str, str, str], list[tuple[int, float]]] = {}  # (uri, run id, metric) -> points
_FIXED_ARTIFACTS: dict[tuple[str, str, str], Any] = {}  # (uri, run id, path) -> JSON


class ReportError(Exception):
    """The report cannot be built (a study or store is missing); the message says what exists."""


@dataclass
class TrialRecord:
    number: int
    state: str  # Optuna's state name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any] = field(default_factory=dict)
    values: list[float] | None = None  # objective values, in objective order (COMPLETE only)
    scores: dict[str, float] = field(default_factory=dict)  # the scorecard
    seconds: dict[str, float] = field(default_factory=dict)  # time.*_s
    run_id: str | None = None
    reason: str | None = None
    started: datetime | None = None
    finished: datetime | None = None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # step metric -> [(step, value)]
    intermediate: dict[int, float] = field(default_factory=dict)  # values reported to the pruner
    items: dict[str, list[float]] | None = None  # per-eval-item scores (attach_artifacts)
    generations: list[dict] | None = None  # identity answers (attach_artifacts)
    score_notes: list[str] | None = None  # what its scorecard could not measure, and why (attach_artifacts)
    constraints: dict[str, float] = field(default_factory=dict)  # spec constraint -> violation (<= 0: met)
    replicate_of: int | None = None  # a seed replicate: the search trial whose configuration it re-trains
    seed: int | None = None  # a replicate's training seed
    recorded_from: int | None = None  # a late result: the trial it ran as, closed by another worker meanwhile

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    @property
    def duration_s(self) -> float | None:
        total = self.seconds.get("time.total_s")
        if total is not None:
            return total
        if self.started and self.finished:
            return (self.finished - self.started).total_seconds()
        return None

    @property
    def eval_share(self) -> float | None:
        """Scoring time over training time (time.eval_share; computed for trials logged before it existed)."""
        share = self.seconds.get("time.eval_share")
        if share is None and self.seconds.get("time.eval_s") is not None and self.seconds.get("time.train_s"):
            share = self.seconds["time.eval_s"] / self.seconds["time.train_s"]
        return share

    @property
    def last_step(self) -> int | None:
        steps = [s for points in self.curves.values() for s, _ in points]
        return max(steps) if steps else None


@dataclass
class StudyRecord:
    name: str
    directions: list[str]  # "maximize" / "minimize", one per objective
    objectives: list[str]  # metric names, same order as the values
    trials: list[TrialRecord]
    spec: dict[str, Any] = field(default_factory=dict)  # the validated spec (spec.json)
    spec_text: str = ""  # the spec file as the user wrote it
    spec_file: str | None = None
    versions: dict[str, str] = field(default_factory=dict)  # library -> version
    base_scores: dict[str, float] = field(default_factory=dict)
    base_items: dict[str, list[float]] = field(default_factory=dict)
    base_generations: list[dict] = field(default_factory=list)
    base_notes: list[str] = field(default_factory=list)  # the base model's scorecard notes
    identity_names: tuple[list[str], list[str]] | None = None  # (new names, old names) of the identity suite
    importances: list[dict[str, float]] | None = None  # per objective: param -> importance
    importance_note: str = ""  # why importances are missing
    notes: list[str] = field(default_factory=list)  # what could not be read, said on the page
    tracking_uri: str = ""
    audit: list[dict[str, Any]] = field(default_factory=list)  # per source: harness.audit's JSON

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def by_state(self, state: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == state]

    @property
    def complete(self) -> list[TrialRecord]:
        return [t for t in self.by_state(COMPLETE) if t.values]

    def log_space(self, param: str) -> bool:
        dim = self.spec.get("search", {}).get("space", {}).get(param) or {}
        return bool(dim.get("log"))


# ---------------------------------------------------------------- loading


def load_study(name: str, storage: str, tracking_uri: str) -> StudyRecord:
    """Read one study from Optuna and, where it exists, its MLflow experiment."""
    study = _optuna_study(name, storage)
    record = StudyRecord(
        name=name,
        directions=[d.name.lower() for d in study.directions],
        objectives=_objectives(study),
        trials=[_trial(t) for t in study.get_trials(deepcopy=False)],
        tracking_uri=tracking_uri,
    )
    _link_late_results(record)
    record.importances, record.importance_note = _importances(study, record)
    runs = Runs.open(tracking_uri, name, record.notes)
    if runs is not None:
        runs.fill(record)
    return record


def attach_artifacts(record: StudyRecord, trials: list[TrialRecord]) -> None:
    """Fetch eval items and identity answers of the trials shown in detail (not of every trial)."""
    todo = [t for t in trials if t.items is None and t.run_id]
    client = _client(record.tracking_uri) if todo else None
    for trial in todo:
        fixed = trial.state != RUNNING
        trial.items = _artifact(client, trial.run_id, "scorecard_items.json", fixed) or {}
        trial.generations = _artifact(client, trial.run_id, "identity_generations.json", fixed) or []
        trial.score_notes = _artifact(client, trial.run_id, "scorecard_notes.json", fixed) or []


def _optuna_study(name: str, storage: str) -> Any:
    from harness import search
    from harness.stores import StoreError

    _require_file(storage, "Optuna storage")
    try:
        return search.load_study(name, storage)
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    except KeyError:
        names = search.study_names(storage)
        found = ", ".join(sorted(names)) if names else "none"
        raise ReportError(f"no study '{name}' in {redact(storage)}. Studies there: {found}") from None


def _require_file(url: str, what: str) -> None:
    """A missing SQLite or journal file would be created empty by the libraries; say it is missing instead."""
    path = sqlite_path(url) if "://" in url else Path(url)
    if path is not None and not path.is_file():
        raise ReportError(f"no {what} at {url} (file {path} does not exist)")


def _objectives(study: Any) -> list[str]:
    names = list(study.user_attrs.get("objectives") or [])
    if len(names) != len(study.directions):  # a study not made by the harness: name them by index
        names = [f"objective {i}" for i in range(len(study.directions))]
    return names


def _trial(frozen: Any) -> TrialRecord:
    attrs = frozen.user_attrs
    return TrialRecord(
        number=frozen.number,
        state=frozen.state.name,
        params=dict(frozen.params),
        # Optuna gives a pruned trial its last intermediate value as a value: not an objective score
        values=list(frozen.values) if frozen.values and frozen.state.name == COMPLETE else None,
        scores=dict(attrs.get("scores") or {}),
        seconds=dict(attrs.get("seconds") or {}),
        run_id=attrs.get("mlflow_run_id"),
        reason=attrs.get("fail_reason"),
        started=frozen.datetime_start,
        finished=frozen.datetime_complete,
        intermediate=dict(frozen.intermediate_values),
        constraints=dict(frozen.constraints),
        replicate_of=attrs.get("replicate_of"),
        seed=attrs.get("seed"),
        recorded_from=attrs.get("recorded_from"),
    )


def _link_late_results(record: StudyRecord) -> None:
    """A trial closed by another worker whose result came later (search.record_again) points to the trial
    holding it, which owns its MLflow run."""
    for trial in record.trials:
        if trial.recorded_from is not None and 0 <= trial.recorded_from < len(record.trials):
            closed = record.trials[trial.recorded_from]  # trial numbers index a study's trials
            closed.reason = f"{closed.reason or 'closed'}; its result came later and is trial {trial.number}"
            closed.run_id = None


def _importances(study: Any, record: StudyRecord) -> tuple[list[dict[str, float]] | None, str]:
    """fANOVA importances per objective (seeded); the reason instead when they cannot be computed."""
    import optuna

    complete = record.complete
    varying = varying_params(complete)
    if len(complete) < 2 or not varying:
        return None, "needs at least 2 complete trials whose searched parameters differ"
    if len(varying) < 2:
        return None, f"only one parameter varies ({', '.join(varying)}): nothing to rank it against"
    if all(len({t.values[i] for t in complete}) == 1 for i in range(len(record.objectives))):
        return None, "every complete trial has the same objective value: there is no variance to attribute"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        return [_importance(study, evaluator, i, complete) for i in range(len(record.objectives))], ""
    except (ValueError, RuntimeError) as exc:  # e.g. a dynamic search space
        return None, f"Optuna could not compute them: {exc}"


def _importance(study: Any, evaluator: Any, index: int, complete: list[TrialRecord]) -> dict[str, float]:
    import optuna

    if len({t.values[index] for t in complete}) == 1:  # a flat objective: nothing to explain
        return {}
    target = lambda t: t.values[index]  # noqa: E731
    return optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)


def varying_params(trials: list[TrialRecord]) -> list[str]:
    """Searched parameters that take more than one value among these trials."""
    names = sorted({p for t in trials for p in t.params})
    return [p for p in names if len({repr(t.params.get(p)) for t in trials}) > 1]


# ---------------------------------------------------------------- MLflow


class Runs:
    """The study's MLflow experiment: the sweep (parent) run and one run per trial."""

    def __init__(self, uri: str, client: Any, parent: Any, children: dict[str, Any]):
        self.uri = uri
        self.client = client
        self.parent = parent
        self.children = children  # run id -> run

    @classmethod
    def open(cls, uri: str, study: str, notes: list[str]) -> Runs | None:
        path = sqlite_path(uri)
        if path is not None and not path.is_file():
            notes.append(f"no MLflow store at {redact(uri)}: curves, base model and samples are missing")
            return None
        client = _client(uri)
        experiment = client.get_experiment_by_name(study)
        if experiment is None:
            where = f"no MLflow experiment named '{study}' in {redact(uri)}"
            notes.append(f"{where}: curves, base model and samples are missing")
            return None
        runs = client.search_runs([experiment.experiment_id], f"tags.`{STUDY_TAG}` = '{study}'", max_results=50000)
        parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
        children = {r.info.run_id: r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"}
        return cls(uri, client, parents[0] if parents else None, children)

    def fill(self, record: StudyRecord) -> None:
        if self.parent is not None:
            self._fill_parent(record)
        else:
            record.notes.append("the sweep's parent run is missing: no base model scores")
        by_number = {r.data.tags.get(TRIAL_TAG): r for r in self.children.values()}
        matched = [(t, self.children.get(t.run_id or "") or by_number.get(str(t.number))) for t in record.trials]
        matched = [(trial, run) for trial, run in matched if run is not None]
        wanted = [(run, key) for _, run in matched for key in CURVE_METRICS if key in run.data.metrics]
        curves = self._histories(wanted, record.notes)
        for trial, run in matched:
            self._fill_trial(trial, run, curves)

    def _fill_parent(self, record: StudyRecord) -> None:
        run_id = self.parent.info.run_id
        params = self.parent.data.params
        record.versions = {k.removeprefix("version."): v for k, v in params.items() if k.startswith("version.")}
        record.base_scores = dict(self.parent.data.metrics)
        for key in [k for k in record.base_scores if k.startswith(("trials.", "best.", "audit."))]:
            del record.base_scores[key]
        record.spec = _artifact(self.client, run_id, "spec.json") or {}
        record.spec_file, record.spec_text = self._spec_file(run_id)
        # the base model is scored once per study: its artifacts never change once written
        record.base_items = _artifact(self.client, run_id, "base/scorecard_items.json", True) or {}
        record.base_generations = _artifact(self.client, run_id, "base/identity_generations.json", True) or []
        record.base_notes = _artifact(self.client, run_id, "base/scorecard_notes.json", True) or []
        record.audit = (_artifact(self.client, run_id, "data_audit.json", True) or {}).get("sources", [])
        suite = _artifact(self.client, run_id, "base/identity_suite.json", True)
        record.identity_names = (suite["new_names"], suite["old_names"]) if suite else _identity_names(record.spec)

    def _fill_trial(self, trial: TrialRecord, run: Any, curves: dict[tuple[str, str], list]) -> None:
        trial.run_id = run.info.run_id
        tags, metrics = run.data.tags, run.data.metrics
        trial.reason = trial.reason or tags.get("harness.failure_reason")
        if not trial.scores:  # Optuna holds the card; MLflow is the fallback for older trials
            trial.scores = {k: v for k, v in metrics.items() if is_score(k)}
        for key in CURVE_METRICS:
            if curves.get((trial.run_id, key)):
                trial.curves[key] = curves[(trial.run_id, key)]

    def _histories(self, wanted: list[tuple[Any, str]], notes: list[str]) -> dict[tuple[str, str], list]:
        """(run id, metric) -> its points, for every (run, metric) wanted, read HISTORY_READS at a time; a curve
        that cannot be read (a busy database, a server hiccup) is left out and said in `notes`."""
        failures: list[Exception] = []

        def read(run: Any, key: str) -> list[tuple[int, float]]:
            try:
                return self._history(run, key)
            except Exception as exc:  # MLflow raises several types
                failures.append(exc)
                return []

        with ThreadPoolExecutor(HISTORY_READS) as pool:
            points = list(pool.map(lambda run_key: read(*run_key), wanted))
        if failures:
            why = first_line(failures[0])
            notes.append(f"{len(failures)} learning curve(s) could not be read from MLflow ({why}); they are not drawn")
        return {(run.info.run_id, key): p for (run, key), p in zip(wanted, points, strict=True)}

    def _history(self, run: Any, key: str) -> list[tuple[int, float]]:
        """A step metric's finite points (NaN and inf dropped: a diverged run keeps its finite start), one per
        step: the last logged, since a training resumed from a checkpoint logs the steps after it again."""
        cache_key = (self.uri, run.info.run_id, key)
        if cache_key in _ENDED_HISTORIES:
            return _ENDED_HISTORIES[cache_key]
        history = self.client.get_metric_history(run.info.run_id, key)
        latest = {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
        points = [(step, value) for step, value in latest.items() if math.isfinite(value)]  # NaN: a diverged run
        if run.info.status in ("FINISHED", "FAILED"):  # a KILLED run may go on (a trial resumed from a checkpoint)
            _ENDED_HISTORIES[cache_key] = points
        return points

    def _spec_file(self, run_id: str) -> tuple[str | None, str]:
        files = [a.path for a in self.client.list_artifacts(run_id) if a.path.endswith((".yaml", ".yml"))]
        if not files:
            return None, ""
        return files[0], _artifact_text(self.client, run_id, files[0]) or ""


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    # MLflow draws a progress bar per artifact download: noise in `harness sweep`'s own progress display.
    # Set once (unless the user set it), never patched around a call: the report is built beside the
    # sweep's slot threads, and restoring a patched os.environ empties it for a moment under them.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowClient(tracking_uri=uri)


def _artifact_text(client: Any, run_id: str, path: str) -> str | None:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text()
    except Exception:  # a missing artifact (failed trial) is normal; MLflow raises several types
        return None


def _artifact(client: Any, run_id: str, path: str, fixed: bool = False) -> Any:
    """A JSON artifact, or None; `fixed`: it cannot change any more, so it is read once per process."""
    key = (client.tracking_uri, run_id, path)
    if key in _FIXED_ARTIFACTS:
        return _FIXED_ARTIFACTS[key]
    text = _artifact_text(client, run_id, path)
    try:
        value = json.loads(text) if text else None
    except json.JSONDecodeError:
        value = None
    if fixed and value is not None:
        _FIXED_ARTIFACTS[key] = value
    return value


def _identity_names(spec: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """The identity suite's names, when its file is still where the spec said."""
    path = (spec.get("evals") or {}).get("identity")
    if not path or not Path(path).is_file():
        return None
    from harness.scoring.suites import load_identity

    try:
        suite = load_identity(Path(path))
    except Exception:  # the file changed since the sweep: the names are a nicety, not essential
        return None
    return list(suite.new_names), list(suite.old_names)
