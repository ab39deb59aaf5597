"""The sweep: an Optuna study driven trial by trial, each trial tracked as an MLflow child run.

Data flows one way: spec -> study -> trials (each in its own process) -> Optuna values and
MLflow runs. A sweep holds `search.trials` finished trials; running the same command again
resumes it: trials a dead sweep left RUNNING are closed or taken over (recovery) and the missing ones
run. Results are told to Optuna and MLflow by recording.Recorder.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import fencing, search
from harness.data import DataError, draw
from harness.progress import first_line
from harness.recording import RECORD_ATTEMPTS, RUN_ATTR, Recorder, backoff_s
from harness.recovery import Recovery, mark_trial_process, own
from harness.report.live import BuildFailed, LiveReport, ReportProcess, ReportTarget
from harness.spec import SweepSpec, load_spec
from harness.stores import DEFAULT_STORAGE, StudyLock, check_storage
from harness.tracking import RESUMED_TAG, Tracker, default_uri
from harness.trial import (
    COMPLETE,
    FAILED,
    MODEL_DIR,
    RESULT_FILE,
    TrialRequest,
    TrialResult,
    mlflow_params,
    remove_checkpoints,
    remove_model,
    resolve_config,
    trial_folder,
)
from harness.trial import run as trial_job

DEFAULT_OUTPUT_DIR = Path("outputs")
DEFAULT_REPORT_ROOT = Path("reports")
DUPLICATE_ATTR = "duplicate_of"  # a drawn point that repeated a finished trial: told FAIL, never run
MAX_DUPLICATE_DRAWS = 10  # this many repeats in a row: the (discrete) space is used up
WAIT_POLL_S = 2.0  # how often a worker with nothing to claim looks again at other workers' trials


@dataclass
class SweepOptions:
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = field(default_factory=default_uri)
    output_dir: Path = DEFAULT_OUTPUT_DIR
    report_dir: Path | None = None  # default: reports/<study>/
    trials: int | None = None  # overrides search.trials
    verbose: bool = False
    devices: list[str] | None = None  # one trial at a time per GPU (CUDA_VISIBLE_DEVICES of its process)
    parallel: int = 1  # trials at the same time without devices (CPU)

    def slots(self) -> list[str | None]:
        """The device of each slot: one slot per device, else `parallel` slots without one."""
        return list(self.devices) if self.devices else [None] * self.parallel

    def threads_per_trial(self) -> int | None:
        """CPU trials side by side share the cores instead of each taking them all."""
        if self.devices or self.parallel == 1:
            return None
        return max(1, (os.cpu_count() or 1) // self.parallel)


@dataclass
class SweepOutcome:
    study: str
    target: int
    finished: int | None  # None: not known (the database did not answer)
    failed_in_a_row: int
    interrupted: bool = False
    baseline_failed: bool = False
    unreachable: str | None = None  # why no trial could be claimed for a minute (the database is away)

    report: Path | None = None

    @property
    def complete(self) -> bool:
        return self.finished is not None and self.finished >= self.target


@dataclass
class Slots:
    """What every slot of one sweep process shares."""

    study: Any
    tracker: Tracker
    experiment: str
    parent: str
    target: int
    worker: Any
    report: LiveReport  # refreshed after every trial, in the background


@dataclass
class Claim:
    """A trial this worker has claimed: created, owned and heartbeaten, its params drawn."""

    trial: Any
    params: dict[str, Any]
    seed: int | None = None  # a replicate's training seed; None: the spec's
    resume_from: Path | None = None  # a trial taken over from a dead or stopped sweep: its last checkpoint
    run_id: str | None = None  # ... and its MLflow run, which goes on
    folder_lock: fencing.Hold | None = None  # from the claim until the trial is recorded or stopped


WAIT, EXHAUSTED = "wait", "exhausted"  # _claim answers WAIT, a Claim, or None (the study is full)


class Sweep:
    """One invocation of `harness sweep`: resume or start the study and top it up."""

    def __init__(self, spec_path: Path, options: SweepOptions, progress: Any):
        self.spec_path = spec_path
        self.options = options
        self.progress = progress  # harness.progress.SweepProgress: what the user sees
        self.spec: SweepSpec = load_spec(spec_path)
        if options.trials is not None:
            self.spec = self.spec.with_trials(options.trials)
        self.output_dir = (options.output_dir / self.spec.study).resolve()
        self.lock = StudyLock(options.storage, self.spec.study)
        self._state_lock = threading.Lock()  # shared by the slots (threads) of this process
        self._stopping = threading.Event()
        self._live: set[int] = set()  # trials this process is running now
        self._in_a_row, self._exhausted = 0, False
        self._unreachable: str | None = None  # set when claims failed RECORD_ATTEMPTS times in a row
        self._reports: ReportProcess | None = None  # set by run(): builds the report in a process of its own
        self.recorder = Recorder(self.spec, self.output_dir, progress, self._stopping)
        self.recovery = Recovery(self.spec, self.output_dir, self.recorder, self._live)
        self.read: dict[str, Any] = {}  # the spec's sources as read (check_inputs), for the audit ...
        self.sources: dict[str, Any] = {}  # ... and with their held-out pairs set apart: every trial draws from these

    def check_inputs(self) -> None:
        """Everything that can be wrong with the user's files fails here, before anything is written."""
        from harness import data, models
        from harness.scoring import check_evals

        check_storage(self.options.storage)
        models.check(self.spec.model.name, self.spec.model.revision)
        models.precision(self.spec.model.dtype, lora=self.spec.model.lora is not None)  # can this machine train it?
        # read once here: trial processes get their drawn pairs, not the files (a large set costs each one its memory)
        self.read = data.read_sources(self.spec.data, self.spec_path.parent)
        self.sources = data.hold_out(self.read, self.spec.data, self.spec.seed)
        check_evals(self.spec.evals, self.spec_path.parent)

    def run(self) -> SweepOutcome:
        from harness.worker import Worker

        self.check_inputs()
        worker = Worker()  # the trial processes' fork server starts importing while the stores open
        target = ReportTarget([self.spec.study], self.options.storage, self.options.tracking_uri, self.report_dir)
        self._reports = ReportProcess(worker.ctx, target)
        try:
            return self._run(worker)
        finally:
            self._reports.close()

    def _run(self, worker: Any) -> SweepOutcome:
        spec = self.spec
        study = search.open_study(spec, self.options.storage)
        tracker = Tracker(self.options.tracking_uri)
        experiment = tracker.experiment(spec.study)
        with self.lock.held():  # workers starting together find (or create) and describe one parent run
            parent = self._parent(tracker, experiment)
            self._describe_parent(tracker, parent)
            self.recovery.reclaim(study, tracker, experiment)
        target = self._target(study)  # search trials; seed replicates follow them
        planned = (
            target + spec.search.replicates.top_k * len(search.replicate_seeds(spec))
            if spec.search.replicates
            else target
        )
        self.progress.start(spec, planned, search.finished_count(study))
        self._disk_note(planned - search.finished_count(study))
        if spec.search.keep_models:  # what other workers' trials pushed out since this folder last looked
            self._keep_best_models(study)
        try:
            if not self._baseline(worker, tracker, parent):
                self.progress.stop()
                tracker.end(parent, "FAILED", reason="the base model could not be scored")
                return SweepOutcome(spec.study, planned, search.finished_count(study), 0, baseline_failed=True)
            if unusable := self._audit(tracker, parent):
                self.progress.stop()
                tracker.end(parent, "FAILED", reason=unusable)
                raise DataError(f"{self.spec_path}: {unusable}")
            report = LiveReport(functools.partial(self._report, refresh=True))
            try:
                self._run_slots(Slots(study, tracker, experiment, parent, target, worker, report))
            finally:
                report.close()
        except KeyboardInterrupt:  # the database may be what the user gave up waiting for: tried twice, then left
            self._stopping.set()  # also when it came before the slots started (the base model's scoring)
            self.progress.stop()
            outcome = SweepOutcome(spec.study, planned, None, self._in_a_row, interrupted=True)
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: the user wants out now
                self._close_interrupted(study, tracker, parent, outcome)
            return outcome
        self.progress.stop()
        if self._unreachable:  # no count, report or parent-run status can be had without the database
            return SweepOutcome(spec.study, planned, None, self._in_a_row, unreachable=self._unreachable)
        finished = search.finished_count(study)
        searched = search.finished_count(study, searched=True) if self._exhausted else target
        target = searched + len(search.wanted_replicates(study, spec))
        outcome = SweepOutcome(spec.study, target, finished, self._in_a_row, report=self._report())
        if outcome.report:
            tracker.log_artifact(parent, outcome.report, "report")
        self._close_parent(study, tracker, parent, outcome)
        return outcome

    def _close_interrupted(self, study: Any, tracker: Tracker, parent: str, outcome: SweepOutcome) -> None:
        """Mark the sweep's run interrupted, count what finished, build the page: each tried twice at most (the
        database may be what the user gave up waiting for)."""
        reason = "interrupted (Ctrl-C); run the same command to resume"
        end = lambda: tracker.end(parent, "KILLED", reason=reason)  # noqa: E731
        self.recorder.retrying("mark the sweep's run interrupted in MLflow", end, "; the next sweep takes it up")
        outcome.finished = self.recorder.retrying("count the finished trials", lambda: search.finished_count(study), "")
        outcome.report = self._report()  # the page shows the interrupted trials as recorded

    # ------------------------------------------------------------ slots: trials at the same time

    def _run_slots(self, run: Slots) -> None:
        """One thread per slot (a device, or a CPU share), each claiming and running trials until the
        study is full; the main thread only waits, so Ctrl-C reaches it and stops every slot."""
        slots = self.options.slots()
        if self._work_left(run.study, run.target):  # resuming a finished study waits for nothing
            run.worker.ready()
        ended = [threading.Event() for _ in slots]
        for i, device in enumerate(slots):
            thread = threading.Thread(target=self._slot, args=(run, device, ended[i]), name=f"slot-{i}", daemon=True)
            thread.start()
        # Waiting on events, not Thread.join: in Python 3.11 a join interrupted by Ctrl-C marks the thread
        # stopped while it still runs, and the sweep would exit before its slots record their trials.
        try:
            for event in ended:
                while not event.wait(0.2):
                    pass
        except KeyboardInterrupt:
            self._stopping.set()
            run.worker.interrupt_all()
            for event in ended:
                event.wait()
            raise

    def _slot(self, run: Slots, device: str | None, ended: threading.Event) -> None:
        try:
            self._claim_and_run(run, device)
        finally:
            ended.set()

    def _claim_and_run(self, run: Slots, device: str | None) -> None:
        max_failures = self.spec.search.max_failures
        refused = 0  # claims in a row that failed: no trial failed, the database (most likely) is away
        while not self._stopping.is_set() and self._in_a_row < max_failures and not self._unreachable:
            try:
                claim = self._claim(run.study, run.tracker, run.experiment, run.target)
            except Exception as exc:  # waited out as a result's recording is: a database restart stops nothing
                self.recorder.trouble()
                refused += 1
                if refused >= RECORD_ATTEMPTS and not self._live:  # a minute, and no trial of ours still runs
                    self._unreachable = first_line(exc)
                    return
                wait = backoff_s(refused - 1)
                self.progress.note(f"could not claim a trial ({first_line(exc)}); retrying in {wait} s")
                self._stopping.wait(wait)
                continue
            refused = 0
            if claim is None:  # the study is full (a used-up space is noted in self._exhausted)
                return
            if claim == WAIT:
                self._stopping.wait(WAIT_POLL_S)
                continue
            try:
                result = self._one_trial(run, claim, device)
            finally:  # recorded or stopped: nothing of this sweep writes its folder any more
                fencing.release(claim.folder_lock)
            self._count(result.state)
            run.report.refresh()

    def _count(self, state: str) -> None:
        with self._state_lock:
            self._in_a_row = self._in_a_row + 1 if state == FAILED else 0

    # ------------------------------------------------------------ claiming a trial

    def _claim(self, study: Any, tracker: Tracker, experiment: str, target: int) -> Claim | str | None:
        """Under the study's lock: close dead workers' trials, then claim one if the study has room.

        The lock makes counting and creating one step, so workers never overshoot `target`, and a
        trial's owner is recorded before any other worker can look at it. Seed replicates are claimed once
        no search trial is left to run or running: only then are the best configurations known.
        A claim whose lock could not be released afterwards is still run: its writes are done, and a lock
        whose connection broke is freed with it.
        """
        claim: Claim | str | None = None
        try:
            with self.lock.held():
                claim = self._claim_locked(study, tracker, experiment, target)
        except Exception as exc:
            if not isinstance(claim, Claim):
                raise
            self.progress.note(
                f"the study lock could not be released ({first_line(exc)}); trial {claim.trial.number} runs anyway"
            )
        return claim

    def _claim_locked(self, study: Any, tracker: Tracker, experiment: str, target: int) -> Claim | str | None:
        """_claim's work, the study's lock held."""
        if self.recovery.due():
            self.recovery.reclaim(study, tracker, experiment)
        if resumed := self._claim_resumable(study, target):
            return resumed
        finished, running = search.search_counts(study)
        if finished + running < target and not self._exhausted:
            claim = self._claim_search(study)
            if claim != EXHAUSTED:
                return claim
            self._exhausted = True
        if running:  # the search is not over: the best configurations are not known yet
            self.progress.waiting(running)
            return WAIT
        return self._claim_replicate(study)

    def _work_left(self, study: Any, target: int) -> bool:
        """Whether a claim may yet find a trial to run: search trials short of `target`, replicates wanted, or
        trials running elsewhere (whose end may call for replicates). A quick look, without the lock."""
        short = search.finished_count(study, searched=True) < target and not self._exhausted
        if search.running_count(study) or short:
            return True
        return bool(search.missing_replicates(study, self.spec))

    def _claim_search(self, study: Any) -> Claim | str:
        """A trial the sampler draws; EXHAUSTED when draw after draw repeats a finished trial."""
        from optuna.trial import TrialState

        for _ in range(MAX_DUPLICATE_DRAWS):
            trial = study.ask()
            with self._owning(study, trial) as held:
                params = search.suggest(trial, self.spec)
                twin = search.duplicate_of(study, trial)
                if twin is None:
                    with self._state_lock:
                        self._live.add(trial.number)
                    return Claim(trial, params, folder_lock=held)
            fencing.release(held)
            fencing.remove(trial_folder(self.output_dir, trial.number))  # it runs nothing
            trial.set_user_attr(search.REASON_ATTR, f"same parameters as trial {twin}: not run again")
            trial.set_user_attr(DUPLICATE_ATTR, twin)
            study.tell(trial, state=TrialState.FAIL)
        self.progress.note(
            f"{MAX_DUPLICATE_DRAWS} draws in a row repeated finished trials: the search space looks exhausted "
            f"at {search.finished_count(study, searched=True)} trials"
        )
        return EXHAUSTED

    def _claim_resumable(self, study: Any, target: int) -> Claim | None:
        """A trial that a dead or stopped sweep on this host left with a checkpoint (recovery found it), taken
        over: re-owned, its MLflow run goes on and its training resumes from the checkpoint."""
        import optuna

        found = self.recovery.next_resumable(study, target)
        if found is None:
            return None
        frozen, checkpoint = found
        trial = optuna.trial.Trial(study, frozen._trial_id)
        with self._owning(study, trial) as held:
            with self._state_lock:
                self._live.add(frozen.number)
            seed = frozen.user_attrs.get(search.SEED_ATTR)
            return Claim(trial, dict(frozen.params), seed, checkpoint, frozen.user_attrs[RUN_ATTR], held)

    @contextlib.contextmanager
    def _owning(self, study: Any, trial: Any) -> Iterator[fencing.Hold | None]:
        """own() a trial and hold its folder (the hold is yielded): let go again if the claim fails."""
        held = own(study, trial, trial_folder(self.output_dir, trial.number))
        try:
            yield held
        except BaseException:
            fencing.release(held)
            raise

    def _claim_replicate(self, study: Any) -> Claim | str | None:
        """After the search: the next seed replicate of a best configuration (search.replicates), if any."""
        missing = search.missing_replicates(study, self.spec)
        if not missing:
            running = search.running_count(study)
            if running:
                self.progress.waiting(running)
                return WAIT
            return None
        origin, seed = missing[0]
        trial, seed = search.ask_replicate(study, origin, seed)
        with self._owning(study, trial) as held:
            params = search.suggest(trial, self.spec)
            with self._state_lock:
                self._live.add(trial.number)
            return Claim(trial, params, seed, folder_lock=held)

    # ------------------------------------------------------------ one trial

    def _one_trial(self, run: Slots, claim: Claim, device: str | None) -> TrialResult:
        """Run a claimed trial; whatever goes wrong here, the trial is recorded and the sweep goes on."""
        study, tracker = run.study, run.tracker
        trial, params, run_id = claim.trial, claim.params, None
        started = time.monotonic()

        def beat_failed(exc: Exception) -> None:
            self.recorder.trouble()
            self.progress.note(f"trial {trial.number}: a heartbeat could not be recorded ({first_line(exc)}); retrying")

        # Beating until the trial is recorded: a database down for a while as it ends must not make it look abandoned
        with search.heartbeat(study, trial, on_error=beat_failed):
            try:
                if claim.run_id is not None:  # taken over from a dead or stopped sweep: its run goes on
                    run_id = claim.run_id
                    tracker.reopen(run_id, {RESUMED_TAG: claim.resume_from.name})
                    self.progress.note(f"trial {trial.number}: its training resumes from {claim.resume_from}")
                else:
                    run_id = tracker.child_run(run.experiment, run.parent, self.spec.study, trial.number)
                    trial.set_user_attr(RUN_ATTR, run_id)
                config = resolve_config(self.spec, params, claim.seed)
                tracker.log_params(run_id, mlflow_params(config))
                if claim.seed is not None:
                    origin = trial.user_attrs.get(search.REPLICATE_ATTR)
                    self.progress.note(
                        f"trial {trial.number}: trial {origin}'s configuration again, with seed {claim.seed}"
                    )
                self.progress.trial_started(trial.number, params, device)
                result = run.worker.run(
                    trial_job,
                    self._request(trial, config, run_id, device, claim.seed, claim.resume_from, claim.folder_lock),
                    on_event=self.progress.event,
                    on_start=lambda pid: mark_trial_process(trial, pid),
                )
            except DataError as exc:  # this trial's mix draws nothing (every weight 0)
                result = TrialResult(FAILED, reason=str(exc))
            except Exception as exc:  # the orchestrator's own trouble (MLflow, the database): this trial only
                reason = f"the sweep process failed while running this trial: {type(exc).__name__}: {exc}"
                self.progress.note(f"trial {trial.number}: {reason}")
                result = TrialResult(FAILED, reason=reason)
            # a resumed trial's earlier attempts count up to its checkpoint's training (their setup is left out)
            result.seconds["time.total_s"] = (
                time.monotonic() - started + result.seconds.get("time.train_before_resume_s", 0.0)
            )
            result.stopped = self._stopping.is_set() and result.state == FAILED  # one that ended anyway keeps it
            checkpoint = self.recovery.checkpoint(trial.number, trial._trial_id, run_id) if result.stopped else None
            if checkpoint is not None:
                if run_id is not None:  # stays RUNNING in Optuna, for the next sweep to take over; KILLED until then
                    end = lambda: tracker.end(run_id, "KILLED")  # noqa: E731
                    self.recorder.retrying(f"mark trial {trial.number} stopped in MLflow", end)
                result.reason = f"stopped; the same command resumes it from {checkpoint.name}"
            else:
                self.recorder.record(study, trial, tracker, run_id, result)
                if "save_total_limit" not in self.spec.train:  # a spec that sets it keeps its checkpoints
                    remove_checkpoints(trial_folder(self.output_dir, trial.number))
                if self.spec.search.keep_models:
                    self._keep_best_models(study)
        with self._state_lock:
            self._live.discard(trial.number)
        if checkpoint is not None:
            self.progress.trial_stopped(trial.number, params, result.reason)
        else:
            self.progress.trial_ended(trial.number, params, result, search.shown_metrics(self.spec))
        return result

    def _disk_note(self, left: int) -> None:
        """Full fine-tuning saves a whole model per trial: say so at the start when those of the trials left would
        not fit on the output folder's disk (search.keep_models bounds them to the best N and those running)."""
        import shutil

        from harness import models

        if self.spec.model.lora is not None or left <= 0:
            return
        weights = models.precision(self.spec.model.dtype, lora=False).weights
        params = models.parameter_count(self.spec.model.name, self.spec.model.revision)
        if not params:
            return
        size = params * models.weight_bytes(weights)
        keep = self.spec.search.keep_models
        saved = len(list(self.output_dir.glob(f"trial-*/{MODEL_DIR}")))  # already out of the free space
        count = max(0, min(left, keep + len(self.options.slots()) - saved)) if keep else left
        folder = next(p for p in (self.output_dir, *self.output_dir.parents) if p.exists())
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return
        need, also = count * size, ""
        if self.spec.train.get("save_strategy", "no") != "no":
            checkpoint = size + params * 8  # its weights and AdamW's two float32 moments
            if "save_total_limit" in self.spec.train:  # a spec that sets it keeps its trials' checkpoints
                kept = _checkpoints_kept(self.spec.train)
                need += left * kept * checkpoint
                also = f" and {kept} checkpoint(s) of about {_gb(checkpoint)} per trial, kept (train.save_total_limit)"
            else:  # the newest of each running trial, removed as it ends
                need += len(self.options.slots()) * checkpoint
                also = f" and a checkpoint of about {_gb(checkpoint)} per running trial"
        if need <= free:
            return
        fix = "lower search.keep_models" if keep else "set search.keep_models: N to keep only the best N trials' models"
        self.progress.note(
            f"each trial saves its model, about {_gb(size)} in {weights}: {count} more of them{also} need about "
            f"{_gb(need)} and {_gb(free)} are free under {folder}; {fix}, or free space"
        )

    def _keep_best_models(self, study: Any) -> None:
        """search.keep_models: remove from this worker's folder the models of finished trials that search.kept_models
        no longer keeps; a folder without result.json is left alone (its trial process may still be writing it)."""
        from optuna.trial import TrialState

        keep = self.spec.search.keep_models
        why = f"not among the best {keep} trial{'s' if keep > 1 else ''} (search.keep_models)"
        try:
            finished = study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            )
            kept = search.kept_models(finished, self.spec)
            for t in finished:
                folder = trial_folder(self.output_dir, t.number)
                if t.number in kept or not (folder / RESULT_FILE).is_file():
                    continue
                if remove_model(folder, why) and self.options.verbose:
                    self.progress.note(f"trial {t.number}: its model was removed, {why}")
        except Exception as exc:  # the database away: the next recorded trial looks again
            self.progress.note(f"the models of trials outside the best {keep} could not be removed: {first_line(exc)}")

    def _request(
        self,
        trial: Any,
        config: dict[str, Any],
        run_id: str,
        device: str | None,
        seed: int | None = None,
        resume_from: Path | None = None,
        held: fencing.Hold | None = None,
    ) -> TrialRequest:
        """A claimed trial's request; `config`: its resolve_config, whose mix draws the pairs it trains on; `seed`: a
        replicate's training seed (None: the spec's); `held`: the claim's hold on the trial folder."""
        return TrialRequest(
            spec=self.spec.model_dump(mode="json", by_alias=True),
            spec_dir=str(self.spec_path.parent.resolve()),
            number=trial.number,
            params=config["params"],
            run_id=run_id,
            tracking_uri=self.options.tracking_uri,
            storage=self.options.storage,
            trial_id=trial._trial_id,
            output_dir=str(self.output_dir),
            cache_dir=str(_cache_dir(self.options.output_dir)),
            data=draw(self.sources, config["data"]["shares"], self.spec.data.size, self.spec.seed),
            verbose=self.options.verbose,
            device=device,
            threads=self.options.threads_per_trial(),
            seed=seed,
            resume_from=str(resume_from) if resume_from else None,
            claim=held.claim if held else None,
        )

    # ------------------------------------------------------------ the report

    @property
    def report_dir(self) -> Path:
        return self.options.report_dir or DEFAULT_REPORT_ROOT / self.spec.study

    def _report(self, refresh: bool = False) -> Path | None:
        """Build the HTML report (a refresh: in the report process); a report problem never stops a sweep."""
        try:
            return self._reports.build(start=refresh)
        except BuildFailed as exc:  # raised in the report process: the message names the error
            self.progress.note(f"the report could not be built: {exc}")
        except Exception as exc:
            self.progress.note(f"the report could not be built: {type(exc).__name__}: {exc}")
        return None

    # ------------------------------------------------------------ the base model

    def _baseline(self, worker: Any, tracker: Tracker, parent: str) -> bool:
        """Score the base model once per study (cached), and log its card on the parent run."""
        import json

        from harness import baseline
        from harness.scoring import Scorecard
        from harness.scoring.suites import load_identity
        from harness.spec import resolve_path

        path = baseline.card_path(self.output_dir)
        if not path.is_file():
            request = baseline.BaselineRequest(
                spec=self.spec.model_dump(mode="json", by_alias=True),
                spec_dir=str(self.spec_path.parent.resolve()),
                output_dir=str(self.output_dir),
                cache_dir=str(_cache_dir(self.options.output_dir)),
                verbose=self.options.verbose,
            )
            self.progress.baseline_started()
            result = worker.run(baseline.run, request, on_event=self.progress.event)
            self.progress.baseline_ended(result)
            if result.state != COMPLETE:
                return False
        card = Scorecard.from_json(json.loads(path.read_text()))
        if not tracker.client.get_run(parent).data.metrics:
            tracker.log_metrics(parent, card.metrics)
            for name, payload in card.artifacts.items():
                tracker.log_dict(parent, payload, f"base/{name}")
            tracker.log_dict(parent, card.items, "base/scorecard_items.json")
            if self.spec.evals.identity:  # the report names the identity without needing the suite file
                suite = load_identity(resolve_path(self.spec.evals.identity, self.spec_path.parent))
                tracker.log_dict(parent, suite.model_dump(mode="json"), "base/identity_suite.json")
        return True

    def _audit(self, tracker: Tracker, parent: str) -> str | None:
        """Audit the spec's data once per study, on the parent run (the report shows it). Fatal only for a source
        none of whose pairs TRL would train on (returned: why); not recorded then, so a resume audits again."""
        from harness.audit import AUDIT_ARTIFACT, audit_target

        if any(a.path == AUDIT_ARTIFACT for a in tracker.client.list_artifacts(parent)):
            return None
        try:
            found = audit_target(str(self.spec_path), cache_dir=_cache_dir(self.options.output_dir), read=self.read)
        except Exception as exc:
            self.progress.note(f"the data audit could not run: {type(exc).__name__}: {exc}")
            return None
        searched = "max_length" in self.spec.search.space  # trials drawing a larger one may still train
        for s in found.sources:
            if s.dropped and s.dropped == s.audited and not searched:
                which = f"of a random sample of its {s.kept}" if s.sampled else "of its"
                return (
                    f"source '{s.name}': TRL would drop all {s.dropped} {which} pairs, each prompt alone filling "
                    f"max_length {s.max_length}: raise train.max_length or shorten the prompts "
                    f"(harness data audit {self.spec_path} shows them); no trial was run"
                )
        tracker.log_dict(parent, found.to_json(), AUDIT_ARTIFACT)
        tracker.log_metrics(parent, found.metrics())
        verbose = self.options.verbose  # one line a source unless -v; `harness data audit` shows the table
        findings = {s.name: s.warnings() if verbose else [s.summary()] for s in found.sources}
        for name, lines in findings.items():
            for line in filter(None, lines):
                self.progress.note(f"data audit, source '{name}': {line}")
        if not verbose and any(any(lines) for lines in findings.values()):
            self.progress.note(f"data audit in full: harness data audit {self.spec_path} (or -v)")

    def _target(self, study: Any) -> int:
        size = search.grid_size(self.spec)
        if size is not None and size < self.spec.search.trials:
            self.progress.note(f"the grid holds {size} points: running {size} trials, not {self.spec.search.trials}")
            return size
        return self.spec.search.trials

    # ------------------------------------------------------------ the parent run

    def _parent(self, tracker: Tracker, experiment: str) -> str:
        """The study's sweep run. One made for another spec belongs to a study that ran no trial and was started
        anew with this spec (search.open_study): it is set aside with the base model's card it holds."""
        parent = tracker.parent_run(experiment, self.spec.study)
        if tracker.client.get_run(parent).data.params.get("spec_hash", self.spec.spec_hash()) != self.spec.spec_hash():
            tracker.set_aside(parent)
            parent = tracker.parent_run(experiment, self.spec.study)
        return parent

    def _describe_parent(self, tracker: Tracker, parent: str) -> None:
        from harness.spec import summary
        from harness.trial import library_versions

        spec = self.spec
        params = {
            "study": spec.study,
            "model.name": spec.model.name,
            "sampler": spec.search.sampler,
            "objectives": ", ".join(f"{o.direction} {o.metric}" for o in spec.search.objectives),
            "spec_hash": spec.spec_hash(),
            **{f"version.{k}": v for k, v in library_versions().items()},
        }
        existing = tracker.client.get_run(parent).data.params
        tracker.log_params(parent, {k: v for k, v in params.items() if k not in existing})
        tracker.set_tags(parent, {"harness.trials": spec.search.trials})  # a tag: --trials may change it
        tracker.log_dict(parent, spec.model_dump(mode="json", by_alias=True), "spec.json")
        tracker.log_dict(parent, summary(spec), "summary.json")
        tracker.log_artifact(parent, self.spec_path)

    def _close_parent(self, study: Any, tracker: Tracker, parent: str, outcome: SweepOutcome) -> None:
        from optuna.trial import TrialState

        counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
        tracker.log_metrics(parent, {f"trials.{k}": v for k, v in counts.items()})
        best = search.best_trials(study)
        if len(best) == 1:
            tracker.log_metrics(parent, {f"best.{k}": v for k, v in best[0].user_attrs.get("scores", {}).items()})
            tracker.set_tags(parent, {"harness.best_trial": best[0].number})
        elif best:
            tracker.set_tags(parent, {"harness.pareto_trials": ",".join(str(t.number) for t in best)})
        if outcome.complete:
            tracker.end(parent, "FINISHED")
        else:
            reason = f"stopped after {outcome.failed_in_a_row} failed trials in a row"
            tracker.end(parent, "FAILED", reason=reason)


def _cache_dir(output_dir: Path) -> Path:
    from harness.models import cache_dir

    return cache_dir(output_dir.resolve())


def _checkpoints_kept(train: dict[str, Any]) -> int:
    """Checkpoints a trial's Trainer keeps with train.save_total_limit set: null or <= 0 keeps every one, as many
    as max_steps / save_steps (one when the spec does not say)."""
    limit = train.get("save_total_limit")
    if isinstance(limit, int) and limit > 0:
        return limit
    steps, every = train.get("max_steps"), train.get("save_steps")
    if train.get("save_strategy") != "steps" or not isinstance(steps, int) or steps <= 0 or not every or every <= 0:
        return 1
    if every < 1:  # a fraction of the steps, as Transformers reads it
        every = math.ceil(every * steps)
    return math.ceil(steps / every)


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size < 1e10 else f"{size / 1e9:.0f} GB"
