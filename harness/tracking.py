"""MLflow tracking: one experiment per study, one parent run per study, one child run per trial.

Only MlflowClient is used (never the fluent, process-global API), so the orchestrator and the
trial processes can write to the same runs without sharing state.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")

STUDY_TAG = "harness.study"
ROLE_TAG = "harness.role"  # "sweep" for the parent run, "trial" for a child run
TRIAL_TAG = "harness.trial"
PARENT_TAG = "mlflow.parentRunId"
REASON_TAG = "harness.failure_reason"
RESUMED_TAG = "harness.resumed_from"  # the checkpoint a trial's training last went on from
STATE_TAG = "harness.state"  # COMPLETE, PRUNED, FAIL: Optuna's state, which MLflow has no word for

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default: `mlflow ui` in the project finds it
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces: empty for a sweep).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


_RACE = re.compile(r"already exists|duplicate key|UniqueViolation|database is locked", re.IGNORECASE)


def retry_schema_race(action: Callable[[], T], attempts: int = 6) -> T:
    """Workers started together on a fresh database race to create its tables; the losers retry
    (the tables exist by then). Only errors of that race are retried."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts - 1 or not _RACE.search(str(exc)):
                raise
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")


def default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local store (<db folder>/mlruns), as MLflow does for ./mlflow.db."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlruns").as_uri()
    if parsed.scheme in ("", "file"):
        return None  # a file store keeps artifacts inside itself
    return None  # a tracking server decides


class Tracker:
    """The harness's view of one MLflow tracking store."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        from harness.stores import opening

        self.uri = uri
        # with a tracking server, MLflow prints two links at the end of every run: the sweep prints where to look
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # MLflow creates the store's tables when the client (or its first call) opens the store
        with opening(uri):
            self.client = retry_schema_race(lambda: MlflowClient(tracking_uri=uri))
            retry_schema_race(lambda: self.client.search_experiments(max_results=1))
        self._pending: list[Any] = []  # MLflow's futures of metrics logged without waiting

    def experiment(self, name: str) -> str:
        """The study's experiment, created on first use (workers starting together may race to it)."""
        return retry_schema_race(lambda: self._experiment(name))

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if not set(EXPERIMENT_KIND) <= set(exp.tags):  # made by an older harness
                for key, value in EXPERIMENT_KIND.items():
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        root = artifact_root(self.uri)
        location = f"{root}/{name}" if root else None
        return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)

    def experiment_ids(self) -> dict[str, str]:
        """Name -> id of every active experiment (MLflow's empty Default one left out)."""
        return {
            exp.name: exp.experiment_id
            for exp in self.client.search_experiments()
            if exp.name != "Default" or self.client.search_runs([exp.experiment_id], max_results=1)
        }

    def parent_run(self, experiment_id: str, study: str) -> str:
        """The study's sweep run: reused (and reopened) when a sweep is resumed.

        Called under the study's lock, so workers starting together find one; should two exist all the
        same (a store shared without the lock), every worker keeps the oldest.
        """
        runs = self._parent_runs(experiment_id, study)
        if not runs:
            tags = {STUDY_TAG: study, ROLE_TAG: "sweep"}
            mine = self.client.create_run(experiment_id, tags=tags, run_name=f"{study} (sweep)").info.run_id
            runs = self._parent_runs(experiment_id, study)
            if runs[0].info.run_id != mine:
                self.client.delete_run(mine)
        run_id = runs[0].info.run_id
        self.reopen(run_id)
        return run_id

    def set_aside(self, run_id: str) -> None:
        """A sweep run made for an earlier spec of a study that ran no trial: kept, no longer the study's."""
        self.set_tags(run_id, {ROLE_TAG: "sweep (earlier spec)"})
        self.client.set_terminated(run_id, status="FAILED")

    def _parent_runs(self, experiment_id: str, study: str) -> list[Any]:
        query = f"tags.`{STUDY_TAG}` = '{study}' and tags.`{ROLE_TAG}` = 'sweep'"
        return list(self.client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"]))

    def reopen(self, run_id: str, tags: dict[str, Any] | None = None) -> None:
        """A run goes on (a resumed sweep, a trial resumed from a checkpoint): RUNNING again, without the reason
        it stopped for."""
        self.client.update_run(run_id, status="RUNNING")
        if REASON_TAG in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, REASON_TAG)
        if tags:
            self.set_tags(run_id, tags)

    def child_run(self, experiment_id: str, parent_id: str, study: str, number: int) -> str:
        tags = {STUDY_TAG: study, ROLE_TAG: "trial", TRIAL_TAG: str(number), PARENT_TAG: parent_id}
        return self.client.create_run(experiment_id, tags=tags, run_name=f"trial-{number:03d}").info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0, wait: bool = True) -> None:
        """wait=False: queued on MLflow's logging thread (a training step never waits on the store,
        which may be a server across the network); flush() waits for everything queued."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _is_number(v)]
        for i in range(0, len(items), 1000):
            done = self.client.log_batch(run_id, metrics=items[i : i + 1000], synchronous=wait)
            if not wait:
                self._pending.append(done)

    def last_steps(self, run_id: str) -> dict[str, int]:
        """The last step each of a run's metrics was logged at (empty when the store cannot say)."""
        try:
            keys = [k for k in self.client.get_run(run_id).data.metrics if not k.startswith("system/")]
            return {key: max(m.step for m in self.client.get_metric_history(run_id, key)) for key in keys}
        except Exception:  # a resumed training then logs its repeated steps again, as before: nothing is lost
            return {}

    def flush(self) -> None:
        """Wait until the metrics logged with wait=False are stored (raising what storing them raised)."""
        pending, self._pending = self._pending, []
        for done in pending:
            done.wait()

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_dict(self, run_id: str, data: Any, name: str) -> None:
        self.client.log_dict(run_id, data, name)

    def end(self, run_id: str, status: str, state: str | None = None, reason: str | None = None) -> None:
        """status: MLflow's FINISHED, FAILED or KILLED; state: Optuna's trial state, kept as a tag."""
        tags = {STATE_TAG: state} if state else {}
        if reason:
            tags[REASON_TAG] = reason
        if tags:
            self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status=status)

    def runs(self, experiment_id: str, study: str, role: str = "trial", status: str | None = None) -> list[Any]:
        query = f"tags.`{STUDY_TAG}` = '{study}' and tags.`{ROLE_TAG}` = '{role}'"
        if status:
            query += f" and attributes.status = '{status}'"
        return list(self.client.search_runs([experiment_id], query, max_results=50000))


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    return text[:6000]  # MLflow's limit on a param value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'mix': {'identity': 0.7}} -> {'mix.identity': 0.7}: one MLflow param per setting."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def only_numbers(values: Iterable[tuple[str, Any]]) -> dict[str, float]:
    return {k: float(v) for k, v in values if _is_number(v)}
