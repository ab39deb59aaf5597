"""Where a toy sweep's time goes: per-trial setup / training / scoring, and the report refresh.

Runs `harness sweep sweeps/beta.yaml --trials N` into a temporary folder (the toy model comes
from outputs/cache, as for the quickstart, or $HARNESS_CACHE_DIR), then prints what MLflow
recorded per trial and times report builds.
Figures are ratios measured in one run, since this machine is shared and noisy:
scoring / training per trial (the scorecard must cost less than training) and report refresh /
trial (the sweep rebuilds the report after every trial, so it must be cheap beside one).

    .venv/bin/python benchmarks/sweep_costs.py [--trials 3]
"""

from __future__ import annotations

import argparse
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
    print_figures(sweep, cold, warm)
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
