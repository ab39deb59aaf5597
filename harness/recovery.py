"""What dead or stopped workers left RUNNING, and who owns a trial.

A trial records its owner (host, PID, PID namespace, machine boot) as it is created, and its writers hold its
folder's lock (harness.fencing). A trial whose owner is gone (its PID, on this host; its folder's lock, on this
machine, whatever container ran it; a reboot; or, on any host, heartbeats silent past GRACE_S) is closed with the
result it kept in its folder, failed, or, when its writers are surely gone (PID or lock) and its training left a
checkpoint, kept RUNNING for the next claim to resume from there.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import socket
import time
from pathlib import Path
from typing import Any

from harness import fencing, search
from harness.progress import first_line
from harness.recording import RUN_ATTR, Recorder, end_run
from harness.spec import SweepSpec
from harness.stores import GRACE_S
from harness.tracking import TRIAL_TAG, Tracker
from harness.trial import FAILED, RESULT_FILE, TrialResult, read_result, resumable_checkpoint, trial_folder
from harness.worker import process_started

WORKER_ATTR, PID_ATTR = "worker", "trial_pid"  # the sweep process (host:pid) that owns a trial; its trial process
PID_STARTED_ATTR = "trial_pid_started"  # when that trial process started (a PID is reused)
PIDNS_ATTR = "worker_pid_namespace"  # whose process ids WORKER_ATTR's are (containers may share a hostname)
BOOT_ATTR = "worker_boot_id"  # the boot of WORKER_ATTR's machine: after a reboot, no process of it runs
CLAIM_ATTR = "claim"  # drawn at each claim, named by the trial folder's lock (harness.fencing)
# How often a claim also looks for dead workers' trials: every claim did, and with 8 slots that look was
# half of the study lock's hold (the slots' claims queue on it). Heartbeats only go stale after GRACE_S.
RECLAIM_EVERY_S = 5.0


class Recovery:
    """One sweep process's looks for dead workers' trials; `live` is the set of trials its slots run now."""

    def __init__(self, spec: SweepSpec, output_dir: Path, recorder: Recorder, live: set[int]):
        self.spec = spec
        self.output_dir = output_dir
        self.recorder = recorder
        self.live = live
        self.resumable: dict[int, tuple[int, str]] = {}  # dead trials with a checkpoint: number -> (id, claim)
        self.reclaimed_at = -RECLAIM_EVERY_S  # monotonic time of the last look

    @property
    def progress(self) -> Any:
        return self.recorder.progress

    def due(self) -> bool:
        return time.monotonic() - self.reclaimed_at >= RECLAIM_EVERY_S

    def reclaim(self, study: Any, tracker: Tracker, experiment: str) -> None:
        """Close what dead workers left RUNNING, in Optuna and in MLflow (under the lock): with the result a trial
        kept in its folder (write_result) when it ran to its end, else as failed; a trial whose sweep on this
        host is gone and that left a checkpoint stays RUNNING instead, for the next claim to resume.

        A worker on this host is checked by its PID and the machine's boot; any worker, on any host, by Optuna's
        heartbeats, unless this process failed to reach the database within GRACE_S (every worker's heartbeats
        paused with it). A run whose trial was told but never ended (its worker died in between) is closed with
        the told state.
        """
        from optuna.trial import TrialState

        self.reclaimed_at = time.monotonic()
        beats = search.heartbeats_on(study)
        dead = [
            (
                t,
                f"its sweep process ({t.user_attrs.get(WORKER_ATTR, 'unknown')}) died while it ran "
                f"(closed by {worker_id()})",
            )
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if self.gone(t, beats)
        ]
        gone = {d.number for d, _ in dead}  # their process is gone for sure: nothing writes their folders any more
        known = gone | self.live  # ours may beat late, yet they run
        dead += [
            (
                t,
                f"no heartbeat from its worker ({t.user_attrs.get(WORKER_ATTR, 'unknown')}) for over {GRACE_S} s: "
                f"the worker died or lost the database (closed by {worker_id()})",
            )  # fmt: skip
            for t in ([] if self.recorder.in_outage() else search.stale_trials(study))
            if t.number not in known
        ]
        closed: set[int] = set()  # the trials we closed (a worker may have told its own meanwhile)
        kept: dict[int, tuple[TrialResult, str, int | None]] = {}  # those closed with the result kept in their folder
        for frozen, reason in dead:
            run_id = frozen.user_attrs.get(RUN_ATTR)
            result = read_result(trial_folder(self.output_dir, frozen.number), frozen._trial_id, run_id)
            if result and (told := self._record_kept(study, frozen, result)):
                closed.add(frozen.number)
                kept[frozen.number] = told
            elif frozen.number in gone and not result and self.checkpoint(frozen.number, frozen._trial_id, run_id):
                # trained part of the way (a trial that ran to its end but could not be recorded is not trained again)
                self.resumable[frozen.number] = (frozen._trial_id, claim_of(frozen))
            elif search.fail_running(study, frozen, {search.REASON_ATTR: reason}):
                closed.add(frozen.number)
                self.progress.note(f"trial {frozen.number}: {reason}: marked FAIL")
        self._close_runs(study, tracker, experiment, closed, kept, beats)

    def _close_runs(
        self,
        study: Any,
        tracker: Tracker,
        experiment: str,
        closed: set[int],
        kept: dict[int, tuple[TrialResult, str, int | None]],
        beats: bool,
    ) -> None:
        """End the MLflow runs no live worker will end. A run's trial says whether it is live: a RUNNING trial's
        run belongs to a live worker, and so does a trial just told: its worker (a slot here, or another host)
        ends the run right after telling Optuna."""
        from optuna.trial import TrialState

        trials = {str(t.number): t for t in study.get_trials(deepcopy=False)}
        for run in tracker.runs(experiment, self.spec.study, status="RUNNING"):
            trial = trials.get(run.data.tags.get(TRIAL_TAG, ""))
            alive = trial is not None and trial.number not in closed
            if alive and trial.state == TrialState.RUNNING:
                continue
            if alive and (trial.number in self.live or being_recorded(trial, self.gone(trial, beats))):
                continue
            if trial is not None and trial.number in kept:  # as its own worker would have ended it
                end_run(tracker, run.info.run_id, *kept[trial.number])
                continue
            state = trial.state.name if trial and trial.state.is_finished() else FAILED
            reason = (trial.user_attrs.get(search.REASON_ATTR) if trial else None) or "the sweep process died"
            status = "FAILED" if state == FAILED else "FINISHED"  # a told result stands; only its run was left open
            tracker.end(run.info.run_id, status, state=state, reason=None if status == "FINISHED" else reason)

    def _record_kept(self, study: Any, frozen: Any, result: TrialResult) -> tuple[TrialResult, str, int | None] | None:
        """Tell Optuna the result a dead or cut-off worker kept in the trial's folder (write_result): the trial ran
        to its end, only its recording did not (the database was away, or the sweep died). Returns the result, the
        state told and the trial that holds it when not this one, or None when nothing was told."""
        import optuna

        kept = trial_folder(self.output_dir, frozen.number) / RESULT_FILE
        try:
            state, number = self.recorder.tell(study, optuna.trial.Trial(study, frozen._trial_id), result)
        except Exception as exc:  # then it is failed as any dead worker's trial (which raises if the database is away)
            self.progress.note(f"trial {frozen.number}: {kept} could not be recorded ({first_line(exc)})")
            return None
        if number is None:
            return None
        self.progress.note(f"trial {frozen.number}: recorded as {state} from {kept}")
        return result, state, (number if number != frozen.number else None)

    def next_resumable(self, study: Any, target: int) -> tuple[Any, Path] | None:
        """A trial that a dead or stopped sweep on this host left RUNNING with a checkpoint (reclaim found it) and
        its checkpoint, to take over; failed instead when the study already holds its `target` search trials
        (--trials lowered)."""
        from optuna.trial import TrialState

        while self.resumable:
            trial_id, claim = self.resumable.pop(min(self.resumable))
            frozen = study._storage.get_trial(trial_id)
            if frozen.state != TrialState.RUNNING or claim_of(frozen) != claim:
                continue  # closed or taken over meanwhile (a worker id alone may be another container's PID 1 too)
            if self.folder_held(frozen):
                continue  # its writers are back (it was found dead by its PID): the next look decides again
            checkpoint = self.checkpoint(frozen.number, trial_id, frozen.user_attrs.get(RUN_ATTR))
            if checkpoint is None:
                continue  # gone meanwhile: the next look closes the trial as failed
            if not search.is_replicate(frozen) and search.finished_count(study, searched=True) >= target:
                reason = f"its sweep stopped; not resumed: the study holds its {target} trials"
                if search.fail_running(study, frozen, {search.REASON_ATTR: reason}):
                    self.progress.note(f"trial {frozen.number}: {reason}: marked FAIL")
                continue
            return frozen, checkpoint
        return None

    def gone(self, frozen: Any, heartbeats: bool) -> bool:
        """Whether a RUNNING trial's sweep and trial processes are surely gone. For a trial run on this machine
        (same boot), whatever container ran it, its folder's lock says so (harness.fencing), when the lock file
        names the trial's claim; else its PIDs, where they mean the same here (is_orphan)."""
        boot = frozen.user_attrs.get(BOOT_ATTR)
        if boot and boot == boot_id() and frozen.number not in self.live:
            held = self.folder_held(frozen)
            if held is not None:
                return not held
        return is_orphan(frozen, self.live, heartbeats)

    def folder_held(self, frozen: Any) -> bool | None:
        """fencing.in_use of the trial's folder for its recorded claim."""
        return fencing.in_use(trial_folder(self.output_dir, frozen.number), frozen.user_attrs.get(CLAIM_ATTR))

    def checkpoint(self, number: int, trial_id: int, run_id: str | None) -> Path | None:
        """The trial's newest complete checkpoint, if its folder holds one of this trial's training."""
        return resumable_checkpoint(trial_folder(self.output_dir, number), trial_id, run_id)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def own(study: Any, trial: Any, folder: Path) -> fencing.Hold | None:
    """Mark a trial as this worker's (under the study's lock): a new claim, recorded before its folder's lock
    names it (the lock tells nothing of a claim not recorded) and taken before anything else (a trial taken
    over is never unheld while it is ours), then its first heartbeat, then its owner (an owned trial always has
    a heartbeat that can go stale; one with none was left by a worker that died in between). Returns the hold
    on its folder, for fencing.release once the trial is recorded or stopped."""
    claim = fencing.new_claim()
    trial.set_user_attr(CLAIM_ATTR, claim)
    held = fencing.hold(folder, claim)
    try:
        search.beat(study, trial)
        trial.set_user_attr(PIDNS_ATTR, pid_namespace())
        trial.set_user_attr(BOOT_ATTR, boot_id())
        trial.set_user_attr(WORKER_ATTR, worker_id())
    except BaseException:
        fencing.release(held)
        raise
    return held


@functools.cache
def pid_namespace() -> str:
    """The process ids this process sees ('' where the OS has no such namespaces): containers on the host's
    network share its hostname but not its process ids, so a PID says nothing across them."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@functools.cache
def boot_id() -> str:
    """This boot of the machine ('' where the OS does not say): Linux draws a new one at each start."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def is_orphan(frozen: Any, live: set[int], heartbeats: bool = True) -> bool:
    """A trial whose sweep process is gone, checked by its PID where this process sees the same ones (same
    hostname and PID namespace); other hosts' and other containers' trials are left to heartbeats. Without
    heartbeats (a journal file) a PID on this hostname is all there is to go on.

    Called under the study's lock: a trial without an owner was left by a worker that died between
    creating it and recording its owner (one step under the same lock), so nobody is running it.
    """
    host, _, pid = str(frozen.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    boot = frozen.user_attrs.get(BOOT_ATTR)
    if host == socket.gethostname() and boot and boot_id() and boot != boot_id():
        return True  # this machine has restarted since (its PIDs may be reused now): that process is gone
    namespace = frozen.user_attrs.get(PIDNS_ATTR, pid_namespace())  # none recorded: an older harness's trial
    here = host == socket.gethostname() and (namespace == pid_namespace() or not heartbeats)
    if not here or not pid.isdigit():  # another machine, or a container beside this one
        return not frozen.user_attrs.get(WORKER_ATTR)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:  # its trial process stops within a second or two of its sweep: not before
        return not _trial_process_alive(frozen)
    except PermissionError:
        return False
    return int(pid) == os.getpid() and frozen.number not in live  # ours by a recycled PID, or by a slot


def mark_trial_process(trial: Any, pid: int) -> None:
    """Record a trial's process, which may outlive its sweep by a moment (and must not be taken over then)."""
    trial.set_user_attr(PID_ATTR, pid)
    with contextlib.suppress(OSError):  # not recorded: the trial is taken to be gone with its sweep, as before
        trial.set_user_attr(PID_STARTED_ATTR, process_started(pid))


def _trial_process_alive(frozen: Any) -> bool:
    pid, started = frozen.user_attrs.get(PID_ATTR), frozen.user_attrs.get(PID_STARTED_ATTR)
    try:
        return bool(pid and started) and process_started(int(pid)) == started
    except OSError:  # /proc unreadable for a moment: look again later
        return True


def claim_of(frozen: Any) -> str:
    """Which claim of a trial this is: its token, or for a trial an older harness claimed, its worker."""
    return frozen.user_attrs.get(CLAIM_ATTR) or frozen.user_attrs.get(WORKER_ATTR, "")


def being_recorded(frozen: Any, gone: bool) -> bool:
    """A finished trial, not one of this process's slots', whose worker may still be ending its MLflow run: a
    worker elsewhere within the heartbeat grace of telling Optuna (its run is closed on a later look if not).
    The teller's clock may be another machine's: a skew either way closes the run early, with the told state.
    `gone`: its worker is surely gone (Recovery.gone)."""
    if gone:  # nobody will end the run
        return False
    told = frozen.datetime_complete
    return told is not None and abs(datetime.datetime.now() - told) < datetime.timedelta(seconds=GRACE_S)
