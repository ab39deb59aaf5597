"""The sweep's report, kept fresh in the background while trials run.

A refresh reads the whole study and grows with it (seconds at a few hundred trials: fANOVA, the
runs' search, one curve per trial), so the slots never wait for one: a trial's end asks for a
refresh and the slot goes on to its next trial. Asks that arrive during a build fold into one
next build, so the page always catches up with the latest trial and builds never queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
