"""What a quiet sweep prints: one line per trial, plus a line for one-time work that takes a minute."""

from __future__ import annotations

import io

from rich.console import Console

from harness.progress import SweepProgress


def quiet_progress() -> tuple[SweepProgress, io.StringIO]:
    out = io.StringIO()
    progress = SweepProgress(Console(file=out, width=200), verbose=False)
    progress.baseline_started()
    return progress, out


def test_quiet_progress_hides_routine_status() -> None:
    progress, out = quiet_progress()
    progress.event(("status", -1, "scoring the base model"))
    progress.event(("status", 3, "training"))
    assert out.getvalue() == ""


def test_notes_are_printed_even_when_quiet() -> None:
    progress, out = quiet_progress()
    progress.event(("note", -1, "building the toy model into /tmp/x (once per recipe, about a minute)"))
    assert "base model: building the toy model into /tmp/x" in out.getvalue()


def test_a_dead_trial_shows_its_last_log_lines() -> None:
    from harness.trial import FAILED, TrialResult

    progress, out = quiet_progress()
    reason = "trial process killed by SIGKILL during scoring; last log lines of /x/trial.log:\nstep 9\n[oom] killed"
    progress.trial_ended(2, {"beta": 0.1}, TrialResult(FAILED, reason=reason), [])
    assert out.getvalue().splitlines() == [
        "✗ trial 2  beta=0.1  FAILED: trial process killed by SIGKILL during scoring; last log lines of /x/trial.log:",
        "    step 9",
        "    [oom] killed",
    ]


def test_an_optuna_storage_error_is_shown_by_its_cause() -> None:
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import OperationalError

    from harness.progress import first_line

    try:
        try:
            raise OperationalError("SELECT 1", {}, Exception("connection to server failed: Connection refused"))
        except OperationalError as cause:
            raise StorageInternalError("An exception is raised during the commit. ... invalid data") from cause
    except StorageInternalError as exc:
        assert first_line(exc).startswith("OperationalError: (builtins.Exception) connection to server failed")
