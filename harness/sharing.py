"""Trials filling a study cache at once split the work: each missing entry is computed by one of them.

The first trials of a `--parallel N` / `--devices` study start together and lack the same entries: the same
pairs' reference log-probs (harness.refcache), the same pairs' prepared rows (harness.tokcache). Rather than each
computing all of them, each claims a chunk of what it lacks (Claims), computes and stores it, releases it, and
picks up what the others store meanwhile (share). The claims live beside the cache's values, in its SQLite file.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

Lookup = Callable[[sqlite3.Connection, list[str]], dict[str, Any]]  # the stored entries among some keys: key -> value


def share(
    conn: sqlite3.Connection,
    folder: Path,
    missing: list[str],
    compute: Callable[[list[str]], dict[str, Any]],
    stored: Lookup,
    chunk: int,
    progress: Callable[[int, int], None] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """The values of the `missing` keys (in the cache `conn`, whose folder is `folder`): those this trial claims,
    `chunk` at a time, go to compute(keys), which computes and stores them and returns their values; the others
    are read as other trials store them (stored(conn, keys)). With `seconds`, later chunks grow to what this
    trial computes in about that time at its pace so far (for a compute with a fixed cost per call, paid rarely
    then), but not past its share of what is left among the trials computing the same keys. progress(done, total)
    is called whenever the count of entries done (here or by others) moves."""
    found: dict[str, Any] = {}
    total, said, slowest, size = len(missing), -1, 0.0, chunk
    with Claims(conn, folder, stored) as claims:
        while missing:
            if progress is not None and said != total - len(missing):
                said = total - len(missing)
                progress(said, total)
            # a claim older than 10 min, or than 3 of this trial's slowest chunks, is stuck (a hung process)
            mine, seen = claims.take(missing, size, stuck_after=max(_STALL_S, 3 * slowest))
            if mine:
                started = time.monotonic()
                fresh = compute(mine)
                took = time.monotonic() - started
                slowest = max(slowest, took)
                if seconds is not None:  # (and no more than this trial's share of what is left: an even end)
                    left = len(missing) - len(mine) - claims.held_elsewhere
                    share_left = math.ceil(max(left, 0) / (len(claims.sharers) + 1))
                    size = max(chunk, min(round(len(mine) * seconds / max(took, 1e-3)), share_left))
                claims.release(mine)  # after the store: an entry is always claimed or stored once claimed
                seen |= fresh
            elif not seen:  # every entry left is another live trial's to compute
                time.sleep(_POLL_S)
            found |= seen
            missing = [key for key in missing if key not in found]
    if progress is not None:
        progress(total, total)
    return found


_POLL_S = 0.5  # how often a trial waiting for other trials' pairs looks for them
_STALL_S = 600.0  # a claim this old is taken over, even from a live trial (a hung process, a far slower device)
CLAIMS_FOLDER = "claims"  # beside the cache file: one lock file per trial filling it now
_NEW_S = 60.0  # a lock file this young is left alone by others: its trial may not have locked it yet


class Claims:
    """Which missing entries (pairs) the trials filling a study's cache at once are computing, so that each pair is
    computed by one of them: a row per claimed key names its owner and when it claimed it, and each owner holds an
    exclusive flock on its own file while it fills. A pair is claimed until it is stored (stored, then released),
    and only a pair neither claimed nor stored is claimed. The kernel drops the lock when its owner dies, however
    it dies (kill -9, the OOM killer), so a trial finding it free takes the dead owner's claims over; a child
    forked without exec (a DataLoader worker) holds it too, until it exits. A claim that a live owner has held too
    long is taken over as well, by one trial, which then holds it afresh. Trials sharing a cache share a machine
    (README: keep --output-dir on a local disk). Where the filesystem refuses locks, nothing is claimed and each
    trial computes all it lacks."""

    TABLE = "claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, since REAL NOT NULL)"

    def __init__(self, conn: sqlite3.Connection, folder: Path, stored: Lookup):
        self.conn, self.folder, self.stored = conn, folder / CLAIMS_FOLDER, stored
        self.owner, self.fd = uuid.uuid4().hex, None
        self.sharers: set[str] = set()  # live trials seen claiming the caller's keys (between chunks too)
        self.held_elsewhere = 0  # the caller's keys they held at the last take

    def __enter__(self) -> Claims:
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE}")
        try:
            self.folder.mkdir(exist_ok=True)
            fd = os.open(self.folder / self.owner, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
            if os.fstat(fd).st_ino != os.stat(self.folder / self.owner).st_ino:  # another's _sweep removed it
                raise OSError("lock file removed before it was locked")  # (only if the clock jumped a minute)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.folder / self.owner)
            return self
        self.fd = fd
        self._sweep()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(sqlite3.Error), self.conn:  # a failed store must not hide why the pass stopped
            self.conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
        with contextlib.suppress(OSError):
            os.unlink(self.folder / self.owner)
        os.close(self.fd)
        self.fd = None

    def take(self, keys: list[str], most: int, stuck_after: float = _STALL_S) -> tuple[list[str], dict[str, Any]]:
        """Claim up to `most` of the missing `keys`, in their order, that are not stored and not claimed (or
        claimed by a dead trial, or over `stuck_after` seconds ago); and the values of those found stored, by
        other trials since this one last looked. Both are empty when every key left is another live trial's to
        compute."""
        if self.fd is None:
            return keys[:most], {}
        mine: list[str] = []
        stored: dict[str, Any] = {}
        if self.conn.in_transaction:  # (BEGIN inside a transaction is an error)
            self.conn.commit()
        self.conn.execute("BEGIN IMMEDIATE")  # one claimer at a time: a pair is claimed once
        try:
            now = time.time()  # wall clock: the claims' times come from several processes
            claimed = {key: (owner, since) for key, owner, since in self.conn.execute("SELECT * FROM claims")}
            dead = {owner for owner, _ in claimed.values() if not self._alive(owner)}
            if dead:
                self.conn.execute(f"DELETE FROM claims WHERE owner IN ({','.join('?' * len(dead))})", list(dead))
            held = {key for key, (owner, since) in claimed.items() if owner not in dead and now - since < stuck_after}
            wanted = set(keys)
            elsewhere = [claimed[key][0] for key in held & wanted if claimed[key][0] != self.owner]
            self.sharers = {
                owner for owner in self.sharers | set(elsewhere) if owner not in dead and self._alive(owner)
            }
            self.held_elsewhere = len(elsewhere)
            for start in range(0, len(keys), most):  # a block at a time, until `most` are found
                free = [key for key in keys[start : start + most] if key not in held]
                stored |= self.stored(self.conn, free)
                mine += [key for key in free if key not in stored][: most - len(mine)]
                if len(mine) == most:
                    break
            self.conn.executemany(
                "INSERT OR REPLACE INTO claims (key, owner, since) VALUES (?, ?, ?)",
                [(key, self.owner, now) for key in mine],
            )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        for owner in dead:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / owner)
        return mine, stored

    def release(self, keys: list[str]) -> None:
        """Drop this trial's claims of pairs now stored (a pair taken over from it is the new owner's to drop)."""
        if self.fd is not None:
            with self.conn:
                self.conn.executemany(
                    "DELETE FROM claims WHERE owner = ? AND key = ?", [(self.owner, key) for key in keys]
                )

    def _sweep(self) -> None:
        """Remove the lock files of trials killed while they held no claim (a dead owner's claims lead the trial
        taking them over to its file); a file younger than a minute may be a new trial's, not locked yet."""
        with contextlib.suppress(OSError):
            for path in self.folder.iterdir():
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > _NEW_S and not self._alive(path.name):
                        path.unlink()

    def _alive(self, owner: str) -> bool:
        """Whether the trial that claimed as `owner` still fills the cache: its lock file is held."""
        if owner == self.owner:
            return True
        try:
            fd = os.open(self.folder / owner, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # drops the lock just taken, if any
        return False
