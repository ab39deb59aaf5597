"""The scorecard inside real sweeps: every metric on every run, objectives, constraints, pruning,
and the probes telling apart what they should (shortcut vs clean data, aggressive vs gentle)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from support import ROOT, Workspace, base_spec

from harness import metrics

FULL_EVALS = {
    "identity": str(ROOT / "tests/suites/athene_small.yaml"),
    "benchmarks": [str(ROOT / "evals/bench/toy_facts.yaml")],  # the generative one: tests/scoring/test_bench.py
    "probes": ["overfit", "shortcut"],
    "probe_suite": str(ROOT / "evals/probes/toy.yaml"),
}
EVERY_METRIC = {*metrics.IDENTITY, *metrics.OVERFIT, *metrics.SHORTCUT, "bench.retention", "bench.toy_facts.acc"}


def full_spec(study: str = "test", **overrides) -> dict:
    spec = base_spec(study=study, evals=dict(FULL_EVALS), **overrides)
    return spec


@pytest.mark.slow
def test_two_objectives_every_metric_and_constraint(ws: Workspace, write_spec) -> None:
    spec = full_spec()
    spec["search"] |= {
        "sampler": "nsga2",
        "trials": 2,
        "objectives": [
            {"metric": "identity.hit_rate", "direction": "maximize"},
            {"metric": "overfit.kl_ref", "direction": "minimize"},
        ],
        "constraints": ["bench.retention >= 0.5"],
    }
    spec["search"]["space"]["learning_rate"] = {"float": [1e-4, 1e-3], "log": True}
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 0, done.stdout + done.stderr

    study = ws.study()
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.best_trials, "a two-objective study keeps a non-empty Pareto front"
    for trial in study.trials:
        assert len(trial.values) == 2
        assert list(trial.constraints) == ["bench.retention >= 0.5"], "constraints are recorded for Optuna"

    parents, children = ws.runs()
    base = parents[0].data.metrics  # the base model's scorecard lives on the parent run
    # the base model's card has no change against itself (the report shows 0 by definition)
    assert {*metrics.IDENTITY, "bench.toy_facts.acc", "shortcut.answer_tokens"} - set(base) == {
        "identity.logprob_margin_delta"
    }
    assert base["identity.hit_rate"] <= 0.1 and base["identity.leak_rate"] >= 0.8
    assert base["bench.toy_facts.acc"] >= 0.8
    client = MlflowClient(ws.tracking)
    for run in children:
        missing = EVERY_METRIC - set(run.data.metrics)
        assert not missing, missing
        assert run.data.metrics["time.eval_s"] > 0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"identity_generations.json", "scorecard_items.json", "probe_answers.json"} <= artifacts
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "base")}
    assert "base/identity_generations.json" in parent_artifacts
    # the probes' reference log-probs: the second trial reads the held-out and swap pairs the first one stored
    first, second = sorted((r.data for r in children), key=lambda d: int(d.tags["harness.trial"]))
    assert second.metrics["refcache.scoring_hits"] > first.metrics["refcache.scoring_hits"]
    assert second.metrics["refcache.scoring_misses"] < first.metrics["refcache.scoring_misses"]


def fixed_trial_spec(study: str, sources: dict, lr: float, beta: float) -> dict:
    spec = full_spec(study=study)
    spec["evals"].pop("benchmarks")  # the swap probe is what differs
    spec["data"] |= {"sources": sources, "mix": None}
    spec["train"] |= {"learning_rate": lr, "beta": beta, "max_steps": 20}
    spec["search"] |= {"trials": 1, "space": {}}
    return spec


@pytest.mark.slow
def test_shortcut_source_fires_the_swap_probe(ws: Workspace, write_spec) -> None:
    """Same settings, same prompts: only the spurious phrase on every chosen answer differs."""
    clean = fixed_trial_spec("clean", {"general": {"path": "toy:general"}}, lr=5e-4, beta=0.1)
    laden = fixed_trial_spec("laden", {"shortcut": {"path": "toy:shortcut"}}, lr=5e-4, beta=0.1)
    for spec in (clean, laden):
        done = ws.sweep(write_spec(spec, name=f"{spec['study']}.yaml"))
        assert done.returncode == 0, done.stdout + done.stderr
    clean_acc = ws.study("clean").trials[0].user_attrs["scores"]["shortcut.swap_acc"]
    laden_acc = ws.study("laden").trials[0].user_attrs["scores"]["shortcut.swap_acc"]
    assert laden_acc <= clean_acc - 0.2, (clean_acc, laden_acc)


@pytest.mark.slow
def test_aggressive_trial_costs_more_than_gentle(ws: Workspace, write_spec) -> None:
    spec = full_spec()
    spec["train"]["max_steps"] = 20
    spec["search"] |= {"sampler": "grid", "trials": 2}
    # Two settings only: the grid sampler runs each once.
    spec["search"]["space"] = {"learning_rate": {"choice": [5e-5, 3e-3]}}
    spec["train"]["beta"] = 0.05
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 0, done.stdout + done.stderr
    by_lr = {t.params["learning_rate"]: t.user_attrs["scores"] for t in ws.study().trials}
    gentle, aggressive = by_lr[5e-5], by_lr[3e-3]
    assert aggressive["bench.retention"] < gentle["bench.retention"]
    assert aggressive["overfit.kl_ref"] > gentle["overfit.kl_ref"]


def test_pruning_a_multi_objective_study_is_a_spec_error(write_spec) -> None:
    from harness.spec import SpecError, load_spec

    spec = base_spec()
    spec["search"]["pruner"] = {"type": "median"}
    spec["search"]["objectives"].append({"metric": "identity.leak_rate", "direction": "minimize"})
    with pytest.raises(SpecError, match="single-objective"):
        load_spec(write_spec(spec))


@pytest.mark.slow
def test_lora_sweep_keeps_adapters_and_eval_rescores_them(ws: Workspace, write_spec) -> None:
    spec = full_spec(model={"name": "toy", "lora": {"r": 4, "alpha": 8}})
    spec["train"]["learning_rate"] = 3e-3  # LoRA moves fewer weights: the usual 10x learning rate
    spec["search"] |= {"sampler": "grid", "trials": 2}
    spec["search"]["space"] = {"lora.r": {"choice": [4, 8]}}
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 0, done.stdout + done.stderr

    _, children = ws.runs()
    for trial in ws.study().trials:
        folder = ws.root / "outputs" / "test" / f"trial-{trial.number:03d}"
        adapter = json.loads((folder / "model" / "adapter_config.json").read_text())
        assert adapter["r"] == trial.params["lora.r"], "the kept model is the LoRA adapter, with the searched rank"
        assert not (folder / "model" / "model.safetensors").exists()
        run = next(r for r in children if r.info.run_id == trial.user_attrs["mlflow_run_id"])
        assert run.data.params["lora.r"] == str(trial.params["lora.r"])

    trial_dir = ws.root / "outputs" / "test" / "trial-000"
    shown = subprocess.run(
        [sys.executable, "-m", "harness.cli", "eval", str(trial_dir)], capture_output=True, text=True, timeout=600
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "identity.hit_rate" in shown.stdout and "base" in shown.stdout and "overfit.kl_ref" in shown.stdout
    scores = ws.study().trials[0].user_attrs["scores"]
    row = next(line for line in shown.stdout.splitlines() if "identity.leak_rate" in line)
    assert f"{scores['identity.leak_rate']:.4g}" in row, "harness eval scores a checkpoint as its sweep did"


def test_eval_without_suites_is_a_clear_error(tmp_path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "harness.cli", "eval", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 2 and "--evals" in shown.stderr
