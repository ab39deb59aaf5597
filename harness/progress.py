"""What a user sees while a sweep runs: one line per trial, a live bar for the one running.

Quiet by default; -v adds each trial's status changes and logged step metrics.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

REASON_LINES = 8  # lines of a failure reason shown under its trial (a dead process's log tail)


def first_line(exc: BaseException) -> str:
    """An error in one line: its type and the first line of its message (of the cause, for an Optuna storage
    error, whose own message blames "invalid data in the commit" for a database that is down too)."""
    while type(exc).__name__ == "StorageInternalError" and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def duration(seconds: float | None) -> str:
    """A span of time as a person reads it: 42 s, 3 min 05 s, 1 h 07 min."""
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def format_params(params: dict[str, Any]) -> str:
    """key=value pairs, escaped: a string param may contain [brackets] that Rich would read as markup."""
    return escape(" ".join(f"{k}={_fmt(v)}" for k, v in params.items()))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    return str(value)


class SweepProgress:
    def __init__(self, console: Console, verbose: bool = False):
        console.soft_wrap = True  # one line per trial, even in logs and pipes
        self.console = console
        self.verbose = verbose
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.sweep_task: Any = None
        self.tasks: dict[int, Any] = {}  # trial number (-1: the base model) -> its bar; several run at once
        self.waiting_for: int | None = None  # other workers' running trials, once announced

    def start(self, spec: Any, target: int, finished: int) -> None:
        objectives = ", ".join(f"{o.direction} {o.metric}" for o in spec.search.objectives)
        resumed = f", resuming with {finished} finished" if finished else ""
        self.console.print(
            f"[bold]Sweep {spec.study}[/]: {target} trials{resumed}; sampler {spec.search.sampler}; {objectives}"
        )
        self.bar.start()
        self.sweep_task = self.bar.add_task("trials", total=target, completed=finished, detail="")

    def baseline_started(self) -> None:
        self.tasks[-1] = self.bar.add_task("base model", total=None, detail="starting")

    def baseline_ended(self, result: Any) -> None:
        self._drop(-1)
        if result.state == "COMPLETE":
            shown = {k: v for k, v in result.scores.items() if not k.startswith("bench.") or k.count(".") == 2}
            scores = " ".join(f"{k}={_fmt(v)}" for k, v in list(shown.items())[:6])
            self.console.print(f"[blue]•[/] base model  {escape(scores)}")
        else:
            self.console.print(f"[red]✗[/] base model could not be scored: {escape(str(result.reason))}")

    def trial_started(self, number: int, params: dict[str, Any], device: str | None = None) -> None:
        where = f" on device {device}" if device is not None else ""
        self.tasks[number] = self.bar.add_task(f"trial {number}{where}", total=None, detail="starting")
        if self.verbose:
            self.console.print(f"  trial {number} starts{where}: {format_params(params)}")

    def _drop(self, number: int) -> None:
        task = self.tasks.pop(number, None)
        if task is not None:
            self.bar.remove_task(task)

    def event(self, event: tuple) -> None:
        kind, task = event[0], self.tasks.get(event[1])
        if kind in ("status", "note"):  # a note is a status worth a line even when quiet
            if task is not None:
                self.bar.update(task, detail=escape(event[2]))
            if self.verbose or kind == "note":
                who = "base model" if event[1] < 0 else f"trial {event[1]}"
                self.console.print(f"  {who}: {escape(event[2])}")
        elif kind == "step" and task is not None:
            self.bar.update(task, completed=event[2], total=event[3], detail="training")

    def trial_ended(self, number: int, params: dict[str, Any], result: Any, shown: list[str]) -> None:
        """One line per trial; `shown` are the metrics to print (objectives, then constrained ones)."""
        self._drop(number)
        seconds = result.seconds.get("time.total_s", 0.0)
        if result.state == "COMPLETE":
            self.bar.advance(self.sweep_task)
            scores = escape(" ".join(f"{name}={_fmt(result.scores.get(name))}" for name in shown))
            self.console.print(f"[green]✓[/] trial {number}  {format_params(params)}  →  {scores}  ({seconds:.0f} s)")
        elif result.state == "PRUNED":
            self.bar.advance(self.sweep_task)
            reason = escape(str(result.reason))
            self.console.print(f"[yellow]✂[/] trial {number}  {format_params(params)}  PRUNED: {reason}")
        else:
            first, *rest = (result.reason or "unknown reason").splitlines() or ["unknown reason"]
            self.console.print(f"[red]✗[/] trial {number}  {format_params(params)}  FAILED: {escape(first)}")
            for line in rest[:REASON_LINES]:  # e.g. the last log lines of a process the kernel killed
                self.console.print(f"    {line}", style="dim", markup=False, highlight=False)
        self.waiting_for = None

    def trial_stopped(self, number: int, params: dict[str, Any], reason: str) -> None:
        """A trial stopped with a checkpoint: RUNNING in Optuna still, for the next sweep to take over."""
        self._drop(number)
        self.console.print(f"[yellow]⏸[/] trial {number}  {format_params(params)}  {escape(reason)}")
        self.waiting_for = None

    def waiting(self, running: int) -> None:
        """Every trial left is running in another worker: say so once, then wait for their outcome."""
        if self.waiting_for != running:
            self.note(f"waiting for {running} running trial(s) to finish (here or in other workers)")
            self.waiting_for = running

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/]")

    def stop(self) -> None:
        self.bar.stop()
