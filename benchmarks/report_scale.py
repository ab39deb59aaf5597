"""How a report refresh grows with the study: build times at 8, 32, 128 and 256 trials.

Runs a 2-trial toy sweep (`harness sweep sweeps/beta.yaml --trials 2`), then grows its study with copies of
those two trials: new Optuna trials (parameters drawn from the spec's space, objective values drawn at
random) and new MLflow runs holding the real trials' metrics, artifacts and learning curves stretched to
--points points per curve (a long run logging every few steps). At each size it times a cold build (every
run's curves read, as `harness report` does in a new process) and a refresh after one more trial ended (only
the new run's curves read), which is what a sweep does in the background after every trial. Figures are
seconds measured in this one run, with the machine's load beside them. With --server it also times a cold
build at the largest size through a real `mlflow server` on the same store (the several-hosts path, where
every history is an HTTP request); the server runs on this machine, so it competes with the build for CPU.

    .venv/bin/python benchmarks/report_scale.py [--sizes 8 32 128 256] [--points 100] [--server]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from _common import DEFAULT_SPEC, Sweep, machine, run_sweep

from harness.report import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128, 256])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--server", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        sweep = run_sweep(folder / "sweep", DEFAULT_SPEC, "--trials", "2")
        grow = Grower(sweep, folder / "artifacts", args.points)
        build(sweep, folder / "warm-up")  # imports (Plotly, fANOVA) are paid once per process
        rows = []
        for size in args.sizes:
            grow.to(size - 1)
            data._ENDED_HISTORIES.clear()  # as in a new process: every run's curves and artifacts read again
            data._FIXED_ARTIFACTS.clear()
            cold = build(sweep, folder / f"cold-{size}")
            grow.to(size)
            refresh = build(sweep, folder / f"refresh-{size}")
            rows.append((size, cold, refresh))
        if args.server:
            with tracking_server(sweep) as url:
                data._ENDED_HISTORIES.clear()
                data._FIXED_ARTIFACTS.clear()
                served = build(sweep, folder / "served", url)
    print(f"\nreport builds, {args.points} points per learning curve; machine: {machine()}")
    print(f"{'trials':>8}{'cold build s':>14}{'refresh s':>12}")
    for size, cold, refresh in rows:
        print(f"{size:>8}{cold:>14.2f}{refresh:>12.2f}")
    if args.server:
        print(f"cold build at {args.sizes[-1]} trials through `mlflow server`: {served:.2f} s")
    print(f"mean toy trial (time.total_s): {sweep.mean('time.total_s'):.1f} s")


def build(sweep: Sweep, out: Path, tracking: str | None = None) -> float:
    from harness.report import build_report

    started = time.perf_counter()
    build_report([sweep.study], sweep.storage, tracking or sweep.tracking, out)
    return time.perf_counter() - started


@contextlib.contextmanager
def tracking_server(sweep: Sweep) -> Iterator[str]:
    """`mlflow server` on the sweep's MLflow store, on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", sweep.tracking, "--workers", "2"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise SystemExit(f"mlflow server at {url} did not answer /health within 2 minutes")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
        server.wait()


class Grower:
    """Adds copies of the sweep's finished trials to its Optuna study and MLflow experiment."""

    def __init__(self, sweep: Sweep, artifacts: Path, points: int):
        import optuna
        from mlflow.tracking import MlflowClient

        self.sweep, self.points, self.random = sweep, points, random.Random(0)
        self.study = optuna.load_study(study_name=sweep.study, storage=sweep.storage)
        self.client = MlflowClient(sweep.tracking)
        self.templates = []
        for trial in self.study.get_trials(deepcopy=False):
            run = self.client.get_run(trial.user_attrs["mlflow_run_id"])
            files = artifacts / str(trial.number)
            files.mkdir(parents=True)
            self.client.download_artifacts(run.info.run_id, "", str(files))
            self.templates.append((trial, run, files))

    def to(self, size: int) -> None:
        while len(self.study.trials) < size:
            self._add(*self.templates[len(self.study.trials) % len(self.templates)])

    def _add(self, trial, run, files: Path) -> None:
        import optuna
        from mlflow.entities import Metric
        from optuna.distributions import FloatDistribution

        number = len(self.study.trials)
        tags = {**run.data.tags, "harness.trial": str(number), "mlflow.runName": f"trial-{number:03d}"}
        child = self.client.create_run(run.info.experiment_id, tags=tags)
        run_id, now = child.info.run_id, int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in run.data.metrics.items()]
        for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
            start = run.data.metrics.get(key, 0.5)
            metrics += [Metric(key, start * (1 - i / (2 * self.points)), now, 10 * i) for i in range(self.points)]
        for i in range(0, len(metrics), 900):  # MLflow takes up to 1000 metrics per batch
            self.client.log_batch(run_id, metrics=metrics[i : i + 900])
        self.client.log_artifacts(run_id, str(files))
        self.client.set_terminated(run_id)
        params = {}
        for name, value in trial.params.items():  # searched floats drawn anew, anything else kept
            d = trial.distributions[name]
            params[name] = self.random.uniform(d.low, d.high) if isinstance(d, FloatDistribution) else value
        attrs = {**trial.user_attrs, "mlflow_run_id": run_id}
        values = [self.random.random() for _ in trial.values]
        self.study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=trial.distributions,
                values=values,
                user_attrs=attrs,
                system_attrs=trial.system_attrs,
            )
        )


if __name__ == "__main__":
    main()
