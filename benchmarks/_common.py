"""What the sweep benchmarks share: run `harness sweep` into a scratch folder, read what MLflow recorded.

Figures are ratios measured in one run, since the machines these run on are shared and noisy: each
script prints the machine's cores and load average beside them, and the comparisons alternate their
sides trial by trial (a sweep resumed with --trials n+1 runs one more trial) so that both see the same load.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "sweeps" / "beta.yaml"


@dataclass
class Sweep:
    """One finished sweep: its folder, wall-clock seconds and each trial's MLflow metrics."""

    folder: Path
    study: str
    wall_s: float
    trials: list[dict[str, float]]

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.folder / 'optuna.db'}"

    @property
    def tracking(self) -> str:
        return f"sqlite:///{self.folder / 'mlflow.db'}"

    def mean(self, key: str) -> float:
        return statistics.mean(t.get(key, 0.0) for t in self.trials)

    def total(self, key: str) -> float:
        return sum(t.get(key, 0.0) for t in self.trials)


def spec_with(folder: Path, changes: dict[str, Any], spec: Path = DEFAULT_SPEC) -> Path:
    """A copy of `spec` with top-level sections updated (e.g. {"model": {"ref_cache": False}}), written in `folder`."""
    data = yaml.safe_load(spec.read_text())
    for section, values in changes.items():
        data[section] = data.get(section, {}) | values if isinstance(values, dict) else values
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_sweep(folder: Path, spec: Path = DEFAULT_SPEC, *extra: str) -> Sweep:
    """`harness sweep spec` into `folder` (storage, tracking, outputs, report), from the repository root so the
    spec's relative paths resolve; the toy model comes from $HARNESS_CACHE_DIR or outputs/cache."""
    folder.mkdir(parents=True, exist_ok=True)
    study = yaml.safe_load(spec.read_text())["study"]
    sweep = Sweep(folder, study, 0.0, [])
    command = [sys.executable, "-m", "harness.cli", "sweep", str(spec), *extra]
    command += ["--storage", sweep.storage, "--tracking-uri", sweep.tracking]
    command += ["--output-dir", str(folder / "out"), "--report-dir", str(folder / "report")]
    env = os.environ | {"HARNESS_CACHE_DIR": os.environ.get("HARNESS_CACHE_DIR", str(ROOT / "outputs/cache"))}
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env)
    sweep.wall_s = time.perf_counter() - started
    sweep.trials = trial_metrics(sweep.tracking, study)
    return sweep


def alternate(runs: dict[str, Callable[[int], Any]], rounds: int) -> dict[str, list[Any]]:
    """Call each run once per round, in turn (a(1), b(1), a(2), b(2), ...), so that the load other workers
    put on a shared machine falls on every side alike rather than on whichever ran while it was high."""
    results: dict[str, list[Any]] = {name: [] for name in runs}
    for n in range(1, rounds + 1):
        for name, run in runs.items():
            results[name].append(run(n))
    return results


def trial_metrics(tracking: str, study: str) -> list[dict[str, float]]:
    """Each trial run's latest metric values, in trial order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], "tags.`harness.trial` != ''")
    runs.sort(key=lambda r: int(r.data.tags["harness.trial"]))
    return [dict(r.data.metrics) for r in runs]


def machine() -> str:
    """Cores and load average now: the context every figure needs on a shared machine."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load} (1, 5, 15 min)"
