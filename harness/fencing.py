"""Who may write a trial's folder: a lock that its writers hold, and that a worker on the same machine can test.

A trial's writers, its sweep process (from its claim until it is recorded or stopped) and its trial process (for
its whole life), each hold a shared flock on the folder's LOCK_FILE, which names the trial. The kernel drops a
process's locks when it dies, however it dies. So a worker that can take the lock exclusively, on the same kernel
(same boot), knows that nothing writes that folder any more, even when the PIDs of the trial's sweep mean nothing
to it: a container restarted in its pod, or a sweep beside it in another container. Across machines the test says
nothing (a shared disk mounted without locking answers every lock locally): heartbeats decide there.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock then tells nothing, and PIDs and heartbeats decide
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "owner.lock"


def hold(folder: Path, trial_id: int) -> int | None:
    """Claim a trial's folder for its sweep process: the lock file, naming the trial (Optuna's trial id,
    unique in the storage), held shared until `release`. Returns the descriptor that holds it."""
    if fcntl is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a tester's exclusive moment
        name = str(trial_id).encode()
        os.pwrite(fd, name, 0)
        os.ftruncate(fd, len(name))
    except BaseException:
        os.close(fd)
        raise
    return fd


def join(folder: Path) -> int | None:
    """The trial process's own hold on its folder, taken before it writes anything (it stops at once if its
    sweep is gone by then, so the folder is never written with no lock held). None when the folder has no lock
    file (a job that is no trial: the baseline)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def in_use(folder: Path, trial_id: int) -> bool | None:
    """Whether a process holds this trial's folder: True (it is written, or may be), False (nothing writes it any
    more), None when the lock cannot tell (no lock file, one left by another trial, no flock). Only a test on the
    kernel its writers ran on answers (see the module's docstring)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        if os.pread(fd, 32, 0).decode(errors="replace") != str(trial_id):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # released with the descriptor below: a moment's exclusive hold
    finally:
        os.close(fd)
