"""The sweep's report, kept fresh in the background while trials run.

A refresh reads the whole study and grows with it (seconds at a few hundred trials: fANOVA, the
runs' search, one curve per trial), so the slots never wait for one: a trial's end asks for a
refresh and the slot goes on to its next trial. Asks that arrive during a build fold into one
next build, so the page always catches up with the latest trial and builds never queue.

The builds run in a process of their own (ReportProcess), kept for the whole sweep: a build is seconds of
Python at a few hundred trials, and run in the sweep's process it held the interpreter lock that the slots
need to claim, record and relay their trials.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class LiveReport:
    """Runs `build` in one background thread whenever `refresh()` was called since its last start."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build  # never raises: a report problem must not stop a sweep (Sweep._report)
        self._wanted = threading.Event()
        self._closing = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="report", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """Ask for a build; returns at once."""
        self._wanted.set()

    def close(self) -> None:
        """Stop, after the build in progress (if any) has written its page; asks not yet started are
        dropped: the sweep builds its last report itself (at the end, or after Ctrl-C)."""
        self._closing = True
        self._wanted.set()
        # An event, not Thread.join: in Python 3.11 a join interrupted by Ctrl-C marks the thread stopped
        # while it still runs (see Sweep._run_slots).
        while not self._done.wait(0.2):
            pass

    def _loop(self) -> None:
        try:
            while True:
                self._wanted.wait()
                if self._closing:
                    return
                self._wanted.clear()  # before building: an ask during the build starts the next one
                self._build()
        finally:
            self._done.set()


@dataclass(frozen=True)
class ReportTarget:
    """What one report page is built from, and where it goes (plain data: it crosses to the report process)."""

    studies: list[str]
    storage: str
    tracking_uri: str
    folder: Path

    def build(self) -> Path:
        from harness.report import build_report

        return build_report(self.studies, self.storage, self.tracking_uri, self.folder)


class BuildFailed(Exception):
    """A build raised in the report process; the message is its exception, as `Type: message`."""


class ReportProcess:
    """Builds `target` in a child process started on the first build and kept until `close()`, so the
    caches a refresh relies on (ended runs' curves) stay warm. Should that process die, builds go on here."""

    def __init__(self, ctx: Any, target: ReportTarget):
        self._ctx, self._target = ctx, target  # ctx: the trial processes' (fork server) context
        self._process: Any = None
        self._conn: Any = None
        self._broken = False
        self._lock = threading.Lock()  # the background thread's refreshes and the sweep's final build

    def build(self, start: bool = True) -> Path:
        """Build the page and return its path; raises BuildFailed (or, built here, the build's own error).

        start=False builds here unless the process is running: starting it waits for the fork server's
        imports (~10 s), which a resumed sweep with nothing left to run never needs."""
        with self._lock:
            if not self._broken and (start or self._process is not None):
                try:
                    if self._process is None:
                        self._start()
                    self._conn.send("build")
                    ok, value = self._conn.recv()
                except (EOFError, OSError):  # it died (killed, out of memory): the sweep's own process takes over
                    self._broken = True
                    self._stop()
                else:
                    if not ok:
                        raise BuildFailed(value)
                    return value
        return self._target.build()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> None:
        self._conn, child = self._ctx.Pipe()
        self._process = self._ctx.Process(
            target=_serve, args=(child, self._target, os.getpid()), name="report", daemon=True
        )
        self._process.start()
        child.close()

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the process sees the end of its pipe and exits
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
        self._process = self._conn = None


def _serve(conn: Any, target: ReportTarget, sweep_pid: int) -> None:
    """The report process: one build per request, until the sweep closes the pipe (or dies)."""
    import warnings

    from harness.worker import die_with_sweep

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle; it asks for a last build
    die_with_sweep(sweep_pid)
    warnings.filterwarnings("ignore")  # the libraries' deprecation notes are nothing a sweep's user can act on
    while True:
        try:
            conn.recv()
        except EOFError:
            return
        try:
            reply = (True, target.build())
        except Exception as exc:
            reply = (False, f"{type(exc).__name__}: {exc}")
        conn.send(reply)
