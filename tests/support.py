"""Helpers shared by tests (importable as `support`; see pythonpath in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
            "max_steps": 10,
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
        "evals": {"identity": str(ROOT / "evals" / "identity" / "athene.yaml")},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition("__")
        if leaf:
            spec[section][leaf] = value
        else:
            spec[key] = value
    return spec
