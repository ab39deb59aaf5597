"""Runs each trial in a process of its own, so nothing a trial does can take the sweep down.

Trial processes are forked from a multiprocessing fork server that has already imported torch,
transformers, TRL, PEFT and MLflow: a trial starts in milliseconds instead of re-paying ~10 s of imports,
yet still gets a fresh address space that dies alone on a crash, an OOM kill or a `kill -9`.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import fencing
from harness.trial import FAILED, TrialResult

# Besides the packages, the submodules they load lazily that every trial uses: DPOTrainer (0.16 s), MLflow's
# client and SQL store (2 s: SQLAlchemy's models, alembic), lm-eval's evaluator (0.5 s)
PRELOAD = ["harness.trial", "harness.baseline", "torch", "transformers", "datasets", "peft", "trl"]
PRELOAD += ["trl.trainer.dpo_trainer", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store"]
PRELOAD += ["lm_eval.evaluator", "lm_eval.models.huggingface"]
Job = Callable[[Any, Any], TrialResult]  # (request, events) -> result; request has .folder, .number, .verbose
_GRACE_S = 20.0  # how long an interrupted trial gets to stop by itself before it is killed
INTERRUPTED = "interrupted (Ctrl-C)"
PHASE_FILE = "phase"  # a job's current phase (setup, training, scoring), read when it dies without a word


def mark_phase(folder: Path, phase: str) -> None:
    """Record where a job is, synchronously: a process killed by the kernel sends no last event."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PHASE_FILE).write_text(phase)


class Worker:
    """Launches trial processes and relays their events until they end."""

    def __init__(self) -> None:
        from multiprocessing import forkserver

        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()  # its imports (~10 s) start now, beside the sweep's own start-up
        self._running: set[Any] = set()  # processes of trials now running (several slots may run at once)
        self._interrupted = False  # Ctrl-C: a slot that was claiming a trial then starts none
        self._lock = threading.Lock()

    def ready(self) -> None:
        """Wait for the fork server to finish its imports (by forking a process that does nothing), so that
        they count in no trial's time: the first trial of every `harness sweep` would otherwise carry them."""
        process = self.ctx.Process(target=_nothing, name="warm-up")
        process.start()
        process.join()

    def run(
        self,
        job: Job,
        request: Any,
        on_event: Callable[[tuple], None],
        on_start: Callable[[int], None] | None = None,
    ) -> TrialResult:
        """Run `job(request, events)` in a fresh process and return its result, however it ends."""
        with self._lock:  # started and listed in one step: interrupt_all cannot miss it
            if self._interrupted:
                return TrialResult(FAILED, reason=INTERRUPTED)
            events = self.ctx.Queue()
            process = self.ctx.Process(
                target=_entry, args=(job, request, events, os.getpid()), name=request.folder.name
            )
            process.start()
            self._running.add(process)
        try:
            if on_start:
                on_start(process.pid)
            return _wait(process, events, on_event, request)
        except BaseException:  # Ctrl-C, or the sweep's own trouble (the database, recording the process): stop it
            _interrupt(process)
            raise
        finally:
            with self._lock:
                self._running.discard(process)

    def interrupt_all(self) -> None:
        """Ctrl-C while slots run trials: each trial stops itself (reporting 'interrupted'), or is killed."""
        with self._lock:
            self._interrupted = True
            processes = list(self._running)
        stoppers = [threading.Thread(target=_interrupt, args=(p,)) for p in processes]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()


def _wait(process: Any, events: Any, on_event: Callable, request: Any) -> TrialResult:
    while True:
        try:
            event = events.get(timeout=0.5)
        except queue.Empty:
            if not process.is_alive():
                return _drain(events, process, request)
            continue
        if event[0] == "result":
            process.join(timeout=30)
            return event[2]
        on_event(event)


def _drain(events: Any, process: Any, request: Any) -> TrialResult:
    """The process is gone: take a result it managed to send, or say how it died."""
    try:
        while True:
            event = events.get(timeout=1.0)
            if event[0] == "result":
                return event[2]
    except queue.Empty:
        pass
    return TrialResult(FAILED, reason=_death(process.exitcode, request.folder, request.verbose))


def _death(exitcode: int | None, folder: Path, verbose: bool = False) -> str:
    """How a job process died: the signal or exit code, the phase it was in, and its last log lines."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        reason = f"trial process killed by {name}{hint}"
    else:
        reason = f"trial process exited with code {exitcode} before reporting a result"
    phase = _read(folder / PHASE_FILE).strip()
    reason += f" during {phase}" if phase else " before it started (no phase recorded)"
    log = folder / "trial.log"
    tail = _tail(log)
    if tail:
        return f"{reason}; last log lines of {log}:\n{tail}"
    if verbose:
        return f"{reason}; its output went to the terminal (-v), not to {log}"
    return f"{reason}; {log} is empty" if log.is_file() else f"{reason}; there is no {log}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(log: Path, lines: int = 8) -> str:
    """The last non-blank lines of a log."""
    return "\n".join([line for line in _read(log).splitlines() if line.strip()][-lines:])


def _interrupt(process: Any) -> None:
    """Ctrl-C: let the trial stop itself, then make sure it is gone."""
    if process.is_alive():
        os.kill(process.pid, signal.SIGINT)
        process.join(timeout=_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()


# ---------------------------------------------------------------- inside the job's process


def _nothing() -> None:
    pass


def _entry(job: Job, request: Any, events: Any, sweep_pid: int) -> None:
    """First code in a job process: never raises; the result always goes back through `events`."""
    # The ~640k objects of the preloaded libraries live as long as the process: freezing them keeps every
    # full garbage collection from walking them (0.28 s each; Trainer.train runs one at its start).
    gc.freeze()
    # Its folder held until this process ends (its sweep's machine sees it in use), before anything is written;
    # then a sweep gone by now (its own hold dropped, the trial maybe taken over) stops this process at once.
    if not fencing.join(request.folder, getattr(request, "claim", None)):
        reason = f"{request.folder / fencing.LOCK_FILE} no longer names this claim, or cannot be locked"
        events.put(("result", request.number, TrialResult(FAILED, reason=f"{reason}: another worker may run it")))
        return
    die_with_sweep(sweep_pid)
    _pin(request)
    log = _quiet_output(request.folder, request.verbose)
    (request.folder / PHASE_FILE).unlink(missing_ok=True)  # a phase left by an earlier attempt is not this one's
    interrupted = _interrupt_once()
    try:
        try:
            result = job(request, events)
        finally:
            interrupted.set()  # from here on, Ctrl-C must not keep the result from going back
    except KeyboardInterrupt:
        result = TrialResult(FAILED, reason=INTERRUPTED)
    except Exception as exc:  # whatever happened ends this job only
        traceback.print_exc()
        result = TrialResult(FAILED, reason=_describe(exc))
    sys.stdout.flush()
    sys.stderr.flush()
    events.put(("result", request.number, result))
    log.close()


def _interrupt_once() -> threading.Event:
    """Ctrl-C reaches a trial twice (the terminal's, to its whole process group, and the sweep's _interrupt): the
    first stops the job, a later one is ignored, as is any once the returned event is set. A second
    KeyboardInterrupt would otherwise land in the code sending the result, and lose it."""
    done = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if not done.is_set():
            done.set()
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    return done


def _pin(request: Any) -> None:
    """The trial's device and CPU share, set before anything touches CUDA (torch initialises it lazily)."""
    device, threads = getattr(request, "device", None), getattr(request, "threads", None)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower():
        text = f"out of memory: {exc}"
    return text[:2000]


def die_with_sweep(sweep_pid: int) -> None:
    """A job must not outlive its sweep (`kill -9` of the sweep process alone, an OOM kill): it would go on
    writing checkpoints that a rerun resumes from at the same time. Its parent, the fork server, is no help: it
    lives as long as any of its children (each inherits its liveness pipe). So the sweep's process is watched
    itself, by PID and start time (a PID is reused once its process is gone)."""
    born = process_started(sweep_pid)
    if born is None:  # it died as this process started
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                now = process_started(sweep_pid)
            except OSError:  # /proc unreadable for a moment (out of file descriptors): no news
                continue
            if now != born:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def process_started(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc), None when there is no such process (or only
    its exit status, a zombie); where there is no /proc, "alive" for any process (a reused PID looks the same).
    Raises OSError when /proc cannot be read (out of file descriptors)."""
    if os.path.exists("/proc/self/stat"):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None if fields[0] in ("Z", "X") else fields[19]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def _quiet_output(folder: Path, verbose: bool) -> Any:
    """Send the libraries' chatter to the job's log file; -v leaves it on the terminal."""
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "trial.log", "a", buffering=1)  # noqa: SIM115 - closed by _entry
    if verbose:
        return log
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    import warnings

    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    return log
