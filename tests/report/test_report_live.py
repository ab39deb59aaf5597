"""LiveReport: the sweep's report rebuilt in the background, so a slot never waits for a build; ReportProcess:
the builds in a process of their own, so they never hold the sweep's interpreter lock."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from harness.report.live import BuildFailed, LiveReport, ReportProcess, ReportTarget

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


# ---------------------------------------------------------------- the report process


@pytest.fixture
def reports(bare_study: ReportTarget) -> Iterator[ReportProcess]:
    from harness.worker import Worker

    # The sweep's fork server, preloads and all: one started bare here would serve every later Worker of this
    # test process (there is one per process), and their trial processes would lack the preloaded libraries.
    process = ReportProcess(Worker().ctx, bare_study)
    yield process
    process.close()


def test_builds_run_in_one_process_of_their_own(reports: ReportProcess, bare_study: ReportTarget) -> None:
    page = reports.build()
    assert page == bare_study.folder / "index.html" and "Use trial 1" in page.read_text()
    builder = reports._process
    assert builder.pid != os.getpid() and builder.is_alive(), "kept for the next build"
    page.unlink()
    assert reports.build().is_file() and reports._process is builder, "the same process builds again"
    reports.close()
    assert not builder.is_alive(), "close ends it"


def test_a_failed_build_names_its_error(reports: ReportProcess, bare_study: ReportTarget) -> None:
    from dataclasses import replace

    reports._target = replace(bare_study, studies=["nope"])
    with pytest.raises(BuildFailed, match=r"ReportError: no study 'nope'.*Studies there: bare"):
        reports.build()


def test_the_sweep_builds_the_page_itself_once_the_report_process_is_gone(reports: ReportProcess) -> None:
    reports.build()
    reports._process.kill()  # as the kernel would, out of memory
    reports._process.join()
    page = reports.build()
    assert page.is_file() and reports._process is None, "built here, and from now on"


def test_a_build_that_may_not_start_the_process_is_done_here(reports: ReportProcess) -> None:
    assert reports.build(start=False).is_file() and reports._process is None, "nothing started: built here"
    reports.build()
    builder = reports._process
    assert reports.build(start=False).is_file() and reports._process is builder, "a running one is used"
