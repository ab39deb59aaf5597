"""How one orchestrator scales with its slots: `--devices` with N devices vs one, trials of fixed length.

A CPU cannot show N GPUs training, but it can show what the orchestrator costs them: claiming trials under
the study lock, MLflow runs, heartbeats, recording results, refreshing the report, the trial processes'
start. Each trial here is a real trial process (forked from the same server, pinned to its slot's device,
logging a curve to MLflow and step events as training does) that waits `--seconds` instead of training, as
a GPU-bound trial leaves the host's CPU free. The sweep runs in this process with `SweepOptions.devices`
set, the path `--devices 0,1,..` takes (the CLI refuses `--devices` without CUDA). The base model is scored
for real, once per sweep, before the trials; the figures start at the first trial's start.

Prints, for each slot count N, the span from the first trial's start to the last trial's end, and
span(N) / (span(1) / N): the goal of issue 9 is <= 1.15.

    .venv/bin/python benchmarks/orchestrator.py [--slots 1 4 8] [--trials 16] [--seconds 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
# the trial processes unpickle simulated_trial by name: its module must import in the fork server
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")]))

from _common import DEFAULT_SPEC, ROOT, machine  # noqa: E402
from _simulated import SECONDS_ENV, simulated_trial  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each simulated trial trains")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database set-up notes, once per sweep
    os.environ[SECONDS_ENV] = str(args.seconds)
    os.environ.setdefault("HARNESS_CACHE_DIR", str(ROOT / "outputs" / "cache"))
    os.chdir(ROOT)  # the spec's relative paths
    spans = {}
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        for n in args.slots:
            spans[n], overheads = sweep_span(Path(tmp) / f"slots-{n}", n, args.trials)
            print(
                f"{n} slot(s): first trial's start to last trial's end {spans[n]:.1f} s; per trial, beyond its "
                f"{args.seconds:g} s: mean {statistics.mean(overheads):.2f} s, max {max(overheads):.2f} s",
                flush=True,
            )
    print(f"\n{args.trials} trials of {args.seconds:g} s; machine: {machine()}")
    if 1 in spans:
        for n, span in spans.items():
            if n > 1:
                print(f"{n} slots: span / (one slot's span / {n}) = {span / (spans[1] / n):.2f}  (goal <= 1.15)")


def sweep_span(folder: Path, slots: int, trials: int) -> tuple[float, list[float]]:
    """Run the default spec's study with simulated trials on `slots` devices; the trials' span and overheads."""
    import optuna
    from rich.console import Console

    import harness.sweep
    from harness.progress import SweepProgress

    harness.sweep.trial_job = simulated_trial
    options = harness.sweep.SweepOptions(
        storage=f"sqlite:///{folder / 'optuna.db'}",
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        output_dir=folder / "out",
        report_dir=folder / "report",
        trials=trials,
        devices=[str(i) for i in range(slots)],
    )
    folder.mkdir(parents=True)
    outcome = harness.sweep.Sweep(DEFAULT_SPEC, options, SweepProgress(Console(quiet=True))).run()
    if not outcome.complete:
        sys.exit(f"the {slots}-slot sweep stopped short: {outcome}")
    study = optuna.load_study(study_name=outcome.study, storage=options.storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    seconds = float(os.environ[SECONDS_ENV])
    overheads = [(t.datetime_complete - t.datetime_start).total_seconds() - seconds for t in done]
    return span.total_seconds(), overheads


if __name__ == "__main__":
    main()
