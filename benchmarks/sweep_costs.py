"""Where a toy sweep's time goes: per-trial setup / training / scoring, and the report refresh.

Runs `harness sweep sweeps/beta.yaml --trials N` into a temporary folder (the toy model comes
from outputs/cache, as for the quickstart, or $HARNESS_CACHE_DIR), then prints what MLflow
recorded per trial and times report builds.
Figures are ratios measured in one run, since this machine is shared and noisy:
scoring / training per trial (the scorecard must cost less than training), report refresh / trial
(the sweep rebuilds the report after every trial, in the background, beside the next trial), and the
slot's idle time between one trial's end and the next one's start (claiming it, and whatever else the
slot waits for).

    .venv/bin/python benchmarks/sweep_costs.py [--trials 3]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_SPEC, Sweep, machine, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    trials = parser.parse_args().trials
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        sweep = run_sweep(Path(tmp), DEFAULT_SPEC, "--trials", str(trials))
        cold, warm = report_seconds(sweep.study, sweep.storage, sweep.tracking, Path(tmp))
        gaps = idle_between_trials(sweep)
    print_figures(sweep, cold, warm)
    print(f"slot idle between trials: {', '.join(f'{g:.2f}' for g in gaps)} s (mean {sum(gaps) / len(gaps):.2f})")
    print(f"machine: {machine()}")


def report_seconds(study: str, storage: str, tracking: str, folder: Path) -> tuple[float, float]:
    """The first build in a process (imports, caches) and a repeat, as after each trial of a sweep."""
    from harness.report import build_report

    times = []
    for name in ("cold", "warm"):
        started = time.perf_counter()
        build_report([study], storage, tracking, folder / name)
        times.append(time.perf_counter() - started)
    return times[0], times[1]


def idle_between_trials(sweep: Sweep) -> list[float]:
    """Seconds from each trial's end to the next one's start (one slot: the trials ran one after another)."""
    import optuna

    trials = optuna.load_study(study_name=sweep.study, storage=sweep.storage).get_trials(deepcopy=False)
    return [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in itertools.pairwise(trials)]


def print_figures(sweep: Sweep, cold: float, warm: float) -> None:
    mean = sweep.mean
    print(f"\n{len(sweep.trials)} trials, mean seconds per trial:")
    for key in ("time.setup_s", "time.train_s", "time.eval_s", "time.total_s"):
        print(f"  {key:<14} {mean(key):7.2f}")
    print(f"scoring / training per trial: {mean('time.eval_s') / mean('time.train_s'):.2f}  (must stay < 1)")
    print(f"report build: first {cold:.2f} s, repeat {warm:.2f} s")
    print(f"report refresh / trial: {warm / mean('time.total_s'):.2f}")


if __name__ == "__main__":
    main()
