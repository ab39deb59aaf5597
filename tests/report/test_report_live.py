"""LiveReport: the sweep's report rebuilt in the background, so a slot never waits for a build."""

from __future__ import annotations

import threading

import pytest

from harness.report.live import LiveReport

WAIT_S = 30  # a generous bound for a thread to reach a point; reaching it is what is asserted
# a failed assert inside the build (in the report thread) fails the test, not only warns
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class Build:
    """A report build that holds (until released) so the test can act while one is in progress."""

    def __init__(self) -> None:
        self.count = 0
        self.started = [threading.Event() for _ in range(3)]
        self.release = threading.Event()

    def __call__(self) -> None:
        self.started[self.count].set()
        self.count += 1
        assert self.release.wait(WAIT_S)


@pytest.fixture
def build() -> Build:
    return Build()


def test_asks_during_a_build_fold_into_one_next_build(build: Build) -> None:
    live = LiveReport(build)
    live.refresh()
    assert build.started[0].wait(WAIT_S)
    for _ in range(5):  # five trials end while the first build runs: each returns at once
        live.refresh()
    build.release.set()
    assert build.started[1].wait(WAIT_S)  # the page catches up with the latest trial...
    assert not build.started[2].wait(0.5)  # ...in one build, not five queued ones
    live.close()
    assert build.count == 2


def test_close_lets_the_build_in_progress_finish_and_drops_later_asks(build: Build) -> None:
    live = LiveReport(build)
    live.refresh()
    assert build.started[0].wait(WAIT_S)
    live.refresh()  # the sweep's final build (by the caller) replaces this one
    closer = threading.Thread(target=live.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # still writing the page: close waits, so no half-written temp file is left
    build.release.set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert build.count == 1


def test_nothing_is_built_unless_asked(build: Build) -> None:
    live = LiveReport(build)
    live.close()
    assert build.count == 0
