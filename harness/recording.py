"""Recording a finished trial: one outcome told to Optuna and to the trial's MLflow run.

The result is kept in the trial's folder first (trial.write_result), and every write is retried with backoff, so
a database that goes away as a trial ends loses nothing: past the retries the kept result is recorded by a
later look for dead workers' trials (recovery.Recovery).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

from harness import search
from harness.progress import first_line
from harness.spec import SweepSpec
from harness.stores import GRACE_S
from harness.tracking import TRIAL_TAG, Tracker
from harness.trial import COMPLETE, FAILED, PRUNED, TrialResult, trial_folder, write_result

RUN_ATTR = "mlflow_run_id"  # the trial's MLflow run, on the Optuna trial
RECORD_ATTEMPTS = 7  # waits of 1, 2, ... 32 s: a finished trial's result rides out a database restart


class Recorder:
    """Tells Optuna and MLflow what trials came to, for one sweep process (all its slots)."""

    def __init__(self, spec: SweepSpec, output_dir: Path, progress: Any, stopping: threading.Event):
        self.spec = spec
        self.output_dir = output_dir
        self.progress = progress
        self.stopping = stopping  # set by Ctrl-C: retries are cut short
        self._trouble_at = -math.inf  # monotonic time this process last failed to reach the database

    def record(self, study: Any, trial: Any, tracker: Tracker, run_id: str | None, result: TrialResult) -> None:
        """Tell Optuna and MLflow the same outcome; retried, so a database hiccup loses nothing, and one that
        outlasts the retries neither: the result, kept on disk first, is recorded by a later look (recovery)."""
        kept = self.keep(trial, run_id, result)
        give_up = f"; its result is kept in {kept}, and this sweep or the next records it from there" if kept else None
        told = self.retrying(f"record trial {trial.number} in Optuna", lambda: self.tell(study, trial, result), give_up)
        state, number = told if told else (None, None)
        if run_id is None:
            return
        ran_as = number if number != trial.number else None
        self.retrying(f"record trial {trial.number} in MLflow", lambda: end_run(tracker, run_id, result, state, ran_as))

    def tell(self, study: Any, trial: Any, result: TrialResult) -> tuple[str, int | None]:
        """Record the result on the Optuna trial; returns the trial's state, and the number of the trial that
        holds this result (None: another worker had closed the trial, and its outcome stands)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        state, values, constraints = self.outcome(result)
        attrs = {"scores": result.scores, "seconds": result.seconds} | (
            {search.REASON_ATTR: result.reason} if result.reason else {}
        )
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            for key, violation in constraints.items():
                trial.set_constraint(key, violation)
            optuna_state = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED}.get(state, TrialState.FAIL)
            study.tell(trial, values=values, state=optuna_state)
        except (UpdateFinishedTrialError, ValueError) as exc:  # closed by another worker (heartbeats did not reach it)
            closed = search.state_of(study, trial)
            if isinstance(exc, ValueError) and closed == "RUNNING":
                raise  # not a closed trial: values Optuna refuses
            why = (
                f"trial {trial.number} was closed as {closed} by another worker while it ran "
                "(its heartbeats did not reach the database)"
            )
            if closed == "FAIL" and state != FAILED:  # a result after all: the search must not lose it
                number = search.record_again(study, trial, state, values, attrs, constraints)
                self.progress.note(f"{why}; its result is recorded as trial {number}")
                return state, number
            self.progress.note(f"{why}; its result is kept in MLflow")
            return {"COMPLETE": COMPLETE, "PRUNED": PRUNED}.get(closed, FAILED), None
        return state, trial.number

    def outcome(self, result: TrialResult) -> tuple[str, list[float] | None, dict[str, float]]:
        """The state, objective values and constraint violations to tell Optuna; a complete trial without
        its objective metric fails, with the reason."""
        if result.state != COMPLETE:
            return result.state, None, {}
        try:
            values = search.objective_values(self.spec, result.scores)
        except KeyError as exc:
            result.reason = str(exc.args[0])
            return FAILED, None, {}
        return COMPLETE, values, search.constraints(self.spec, result.scores)

    def keep(self, trial: Any, run_id: str | None, result: TrialResult) -> Path | None:
        """The result, written to the trial's folder before it is recorded (None if that failed)."""
        try:
            return write_result(trial_folder(self.output_dir, trial.number), trial._trial_id, run_id, result)
        except Exception as exc:
            self.progress.note(f"trial {trial.number}: its result could not be kept on disk ({first_line(exc)})")
            return None

    def retrying(self, what: str, action: Any, give_up: str | None = None) -> Any:
        """Run `action`, retrying with backoff; a persistent failure is reported (ending with `give_up`), never
        raised. A sweep being stopped tries twice: the user is waiting, and the next sweep closes what is open."""
        for attempt in range(RECORD_ATTEMPTS):
            try:
                return action()
            except Exception as exc:
                self.trouble()
                if attempt == RECORD_ATTEMPTS - 1 or (attempt and self.stopping.is_set()):
                    if give_up is None:
                        give_up = ". The next sweep on this study closes it (heartbeat or process check)"
                    self.progress.note(f"could not {what}: {first_line(exc)}{give_up}.")
                    return None
                self.progress.note(f"could not {what} ({first_line(exc)}); retrying")
                self.stopping.wait(backoff_s(attempt))
        return None

    def trouble(self) -> None:
        """Note that the database did not answer: for GRACE_S after that, silent heartbeats may be the outage's,
        not dead workers' (theirs resume within HEARTBEAT_S once it is back), so they are left be."""
        self._trouble_at = time.monotonic()

    def in_outage(self) -> bool:
        """Whether this process failed to reach the database within the last GRACE_S."""
        return time.monotonic() - self._trouble_at < GRACE_S


def end_run(
    tracker: Tracker, run_id: str, result: TrialResult, state: str | None, recorded_as: int | None = None
) -> None:
    """End a trial's MLflow run as its result says: `state` is the one Optuna was told (None: not told yet);
    `recorded_as`: the trial that holds the result when it is not the one the run was made for (record_again)."""
    state = state or result.state
    status = "KILLED" if result.stopped else "FAILED" if state == FAILED else "FINISHED"
    if recorded_as is not None:
        tracker.set_tags(run_id, {TRIAL_TAG: str(recorded_as)})
    tracker.log_metrics(run_id, {"time.total_s": result.seconds.get("time.total_s", 0.0)})
    tracker.end(run_id, status, state=state, reason=result.reason)


def backoff_s(attempt: int) -> int:
    """The wait after failed attempt `attempt` (from 0) to reach the database: 1, 2, 4 ... 32 s, then 32 s."""
    return 2 ** min(attempt, RECORD_ATTEMPTS - 2)
