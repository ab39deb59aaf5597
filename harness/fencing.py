"""Who may write a trial's folder: a lock that its writers hold, and that a worker on the same machine can test.

A trial's writers, its sweep process (from its claim until it is recorded or stopped) and its trial process (for
its whole life), each hold a shared flock on the folder's LOCK_FILE, which names the claim (a token drawn at each
claim and kept in the trial's user attributes: a takeover, or an earlier study's trial of the same number, writes
another). The kernel drops a process's locks when it dies, however it dies. So a worker that can take the lock
exclusively, on the same kernel (same boot), knows that nothing of that claim writes the folder any more, even when
the PIDs of the trial's sweep mean nothing to it: a container restarted in its pod, or a sweep beside it in another
container. Across machines the test says nothing (a shared disk mounted without locking answers every lock
locally): heartbeats decide there. Where the filesystem refuses locks, nothing is held and the test cannot tell.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "owner.lock"
# The lock files this process holds, by descriptor. NFS emulates flock with POSIX locks, which belong to the
# process: a second descriptor's exclusive try would convert this process's own hold, and its close drop it.
_held: dict[int, str] = {}  # paths as str: compared in C, atomic beside the slots' threads


def new_claim() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Hold:
    """A claim's hold on its trial folder: the descriptor that keeps the lock, and the claim the file names."""

    fd: int
    claim: str


def hold(folder: Path, claim: str) -> Hold | None:
    """Take a trial's folder for this claim's sweep process: the lock file, naming the claim, held shared until
    `release`. None where it cannot be held (a read-only or lockless filesystem: the trial then runs, or fails,
    as it would have without the lock, and the lock tells nothing about it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a tester's exclusive moment
        os.pwrite(fd, claim.encode(), 0)
        os.ftruncate(fd, len(claim))
    except OSError:
        os.close(fd)
        return None
    _held[fd] = str(folder / LOCK_FILE)
    return Hold(fd, claim)


def join(folder: Path, claim: str | None) -> bool:
    """The trial process's own hold on its folder for its sweep's `claim` (None: its sweep holds nothing, the
    lock is not in play), taken before it writes anything and kept for the process's life. False when it must
    not write: the file no longer names the claim (taken over meanwhile) or cannot be locked (it could be
    taken over unseen once its sweep is gone). Its sweep may be gone by the time this returns: die_with_sweep,
    called next, stops the process then."""
    if claim is None:
        return True
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return False
    if not _names(fd, claim):
        os.close(fd)
        return False
    return True  # the descriptor stays open: the lock lasts as long as this process


def release(held: Hold | None) -> None:
    """Let go of a hold (once: the descriptor's number may be reused afterwards)."""
    if held is not None:
        _held.pop(held.fd, None)
        with contextlib.suppress(OSError):
            os.close(held.fd)


def remove(folder: Path) -> None:
    """Drop the lock file of a claim that ran nothing (a duplicate draw), and its folder if that leaves it empty."""
    with contextlib.suppress(OSError):
        (folder / LOCK_FILE).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def in_use(folder: Path, claim: str | None) -> bool | None:
    """Whether a process holds this claim's folder: True (it is written, or may be), False (nothing of the claim
    writes it any more), None when the lock cannot tell (no claim recorded, no lock file, one naming another
    claim, a filesystem without locks). Only a test on the kernel its writers ran on answers (see above)."""
    if not claim:
        return None
    if str(folder / LOCK_FILE) in _held.values():  # this process's own claim of the folder
        return True
    try:  # for writing: NFS emulates flock with POSIX locks, whose exclusive kind needs a writable descriptor
        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    except PermissionError:
        try:
            fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return None
    except OSError:
        return None
    try:
        if not _names(fd, claim):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
        return False  # released with the descriptor below: a moment's exclusive hold
    finally:
        os.close(fd)


def _names(fd: int, claim: str) -> bool:
    """Whether the lock file open at `fd` names this claim."""
    return os.pread(fd, 64, 0).decode(errors="replace") == claim
