"""Trial processes: how a dead one is described (the signal, the phase it died in, its last log lines) and what a
live one inherits from the fork server."""

from __future__ import annotations

import gc
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.trial import COMPLETE, FAILED, TrialResult
from harness.worker import INTERRUPTED, PHASE_FILE, Worker, _death, mark_phase


def test_killed_during_scoring_names_the_phase_and_the_last_log_lines(tmp_path: Path) -> None:
    mark_phase(tmp_path, "training")
    mark_phase(tmp_path, "scoring")
    (tmp_path / "trial.log").write_text("".join(f"line {i}\n" for i in range(20)) + "\n\n")
    reason = _death(-signal.SIGKILL, tmp_path)
    first, *tail = reason.splitlines()
    assert first == (
        "trial process killed by SIGKILL (the system may have run out of memory) during scoring; "
        f"last log lines of {tmp_path / 'trial.log'}:"
    )
    assert tail == [f"line {i}" for i in range(12, 20)]


def test_an_empty_log_is_said_to_be_empty(tmp_path: Path) -> None:
    mark_phase(tmp_path, "training")
    (tmp_path / "trial.log").write_text("")
    reason = _death(-signal.SIGKILL, tmp_path)
    assert reason.endswith(f"during training; {tmp_path / 'trial.log'} is empty")
    assert "last log lines" not in reason


def test_verbose_output_is_said_to_have_gone_to_the_terminal(tmp_path: Path) -> None:
    (tmp_path / "trial.log").write_text("")
    reason = _death(1, tmp_path, verbose=True)
    assert reason.startswith("trial process exited with code 1 before reporting a result")
    assert "before it started (no phase recorded)" in reason and "went to the terminal (-v)" in reason


def test_no_log_at_all(tmp_path: Path) -> None:
    assert _death(-signal.SIGTERM, tmp_path).endswith(f"; there is no {tmp_path / 'trial.log'}")


def test_phase_is_one_word_in_a_file(tmp_path: Path) -> None:
    mark_phase(tmp_path / "trial-000", "setup")
    assert (tmp_path / "trial-000" / PHASE_FILE).read_text() == "setup"


@dataclass
class _Request:
    folder: Path
    number: int = 0
    verbose: bool = False


def _garbage_job(request: _Request, events: object) -> TrialResult:
    """Counts what a full collection in a trial process walks: its own objects, not the preloaded libraries'."""
    return TrialResult(COMPLETE, scores={"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())})


def test_a_job_process_leaves_the_preloaded_libraries_out_of_garbage_collection(tmp_path: Path) -> None:
    result = Worker().run(_garbage_job, _Request(tmp_path / "job"), on_event=lambda event: None)
    assert result.state == COMPLETE, result.reason
    assert result.scores["frozen"] > 100_000  # torch, transformers, TRL, MLflow, lm-eval: frozen at the job's start
    assert result.scores["tracked"] < result.scores["frozen"] / 10


def _touch_job(request: _Request, events: object) -> TrialResult:
    request.folder.mkdir(parents=True)
    return TrialResult(COMPLETE)


def test_after_an_interrupt_a_slot_that_was_claiming_starts_no_trial(tmp_path: Path) -> None:
    """Ctrl-C while a slot claims: the trial it then hands over is not started (it would run to its end)."""
    worker = Worker()
    worker.interrupt_all()
    result = worker.run(_touch_job, _Request(tmp_path / "job"), on_event=lambda event: None)
    assert (result.state, result.reason) == (FAILED, INTERRUPTED)
    assert not (tmp_path / "job").exists(), "the job never ran"


def _interrupted_twice_job(request: _Request, events: object) -> TrialResult:
    """Stopped by a first Ctrl-C, which it handles (as the Trainer ends its loop), then sent a second one as it
    ends: the terminal's and the sweep's reach a trial process one after the other."""
    import os
    import time

    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        pass
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    return TrialResult(COMPLETE, scores={"ended": 1.0})


def test_a_second_ctrl_c_does_not_keep_a_trials_result_from_going_back(tmp_path: Path) -> None:
    result = Worker().run(_interrupted_twice_job, _Request(tmp_path / "job"), on_event=lambda event: None)
    assert (result.state, result.scores) == (COMPLETE, {"ended": 1.0}), result.reason


def _sleeping_job(request: _Request, events: object) -> TrialResult:
    import time

    time.sleep(120)
    return TrialResult(COMPLETE)


def test_a_trial_the_sweep_cannot_record_as_started_is_stopped(tmp_path: Path) -> None:
    """The sweep's own trouble as the trial starts (the database, recording its process) fails that trial in the
    sweep: its process must not go on training unseen."""
    from harness.worker import process_started

    started: list[int] = []

    def database_down(pid: int) -> None:
        started.append(pid)
        raise ConnectionError("the database went away")

    with pytest.raises(ConnectionError):
        Worker().run(_sleeping_job, _Request(tmp_path / "job"), on_event=lambda event: None, on_start=database_down)
    assert started and process_started(started[0]) is None
