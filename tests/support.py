"""Helpers shared by tests (importable as `support`; see pythonpath in pyproject.toml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

ROOT = Path(__file__).resolve().parents[1]


def missing_for_workers(why: str) -> None:
    """Skip a many-workers test on a laptop without PostgreSQL (or root for a second hostname); fail in
    CI, which sets HARNESS_REQUIRE_POSTGRES=1."""
    import pytest

    if os.environ.get("HARNESS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"HARNESS_REQUIRE_POSTGRES=1 but {why}")
    pytest.skip(why)


TEXTS = ["Hi 👋🏽 — naïve café", "  leading spaces", "ends with <|im_end|>", "मैंने", "a\r\nb\n\n\nc", "", "x " * 40]


def messy_pairs(kind: str) -> list[dict]:
    """Messy conversational pairs and the HH fixture's transcripts (several turns), or the same as plain text."""
    messy = [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": t}],
            "chosen": [{"role": "assistant", "content": t[::-1] + " ok"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for t in TEXTS
    ]
    from harness import data
    from harness.spec import SourceSpec

    rows = messy + data.load_source("hh", SourceSpec(path=str(ROOT / "tests/fixtures/data/hh.jsonl"))).train
    if kind == "plain":
        text = lambda messages: "".join(f"{m['role']}: {m['content']}\n" for m in messages)  # noqa: E731
        rows = [
            {"prompt": text(r["prompt"]), "chosen": text(r["chosen"]), "rejected": text(r["rejected"])} for r in rows
        ]
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def base_spec(**overrides: object) -> dict:
    """A small, fast toy sweep; tests override what they exercise."""
    spec = {
        "study": "test",
        "seed": 0,
        "model": {"name": "toy"},
        "data": {
            "sources": {"identity": {"path": "toy:identity"}, "general": {"path": "toy:general"}},
            "mix": {"identity": 0.7, "general": 0.3},
            "size": 64,
            "eval_fraction": 0.1,
        },
        "train": {
            "max_steps": 6,  # enough for curves; tests that need learning ask for more
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-4,
            "beta": 0.1,
            "logging_steps": 2,
        },
        "search": {
            "sampler": "random",
            "trials": 2,
            "space": {"beta": {"float": [0.05, 0.5], "log": True}},
            "objectives": [{"metric": "identity.hit_rate", "direction": "maximize"}],
        },
        "evals": {"identity": str(ROOT / "tests" / "suites" / "athene_small.yaml")},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition("__")
        if leaf:
            spec[section][leaf] = value
        else:
            spec[key] = value
    return spec


class Workspace:
    """A fresh folder holding one sweep's storage, tracking store, outputs and report."""

    def __init__(self, root: Path):
        self.root = root
        self.storage = f"sqlite:///{root / 'optuna.db'}"
        self.tracking = f"sqlite:///{root / 'mlflow.db'}"

    def args(self, spec: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "harness.cli", "sweep", str(spec),
            "--storage", self.storage,
            "--tracking-uri", self.tracking,
            "--output-dir", str(self.root / "outputs"),
            "--report-dir", str(self.root / "report"),
            *extra,
        ]  # fmt: skip

    def sweep(self, spec: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(spec, *extra), capture_output=True, text=True, timeout=timeout)

    def study(self, name: str = "test") -> optuna.Study:
        import optuna

        from harness.stores import open_storage  # one connection pool per database, however often polled

        return optuna.load_study(study_name=name, storage=open_storage(self.storage))

    def runs(self, name: str = "test") -> tuple[list, list]:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking)
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
        children = [r for r in runs if r.data.tags.get("harness.role") == "trial"]
        return parents, children


def answer_length(prompt: object, answer: str) -> float:
    """A reward for `harness data build on-policy --reward support:answer_length` in tests."""
    return float(len(answer))


def broken_reward(prompt: object, answer: str) -> float:
    raise ValueError("no score for this one")
