"""A sweep on a model of a real model's shape: Qwen2 layout, 151,936-token vocabulary, ChatML template.

The toy model's 640-token vocabulary hides what a real one costs; this runs the whole product (CLI,
training, every probe, a benchmark) on the real shape and checks scoring memory through the plan the
probes used, not through timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from support import ROOT, Workspace, base_spec, read_jsonl

from harness import metrics
from harness.scoring import memory

BENCH_LIMIT = 8


def small_suites(folder: Path) -> tuple[Path, Path]:
    """The toy identity and probe suites, cut down: on a CPU every generated token costs a pass over the
    151,936-token LM head, and a test needs every metric, not many items."""
    identity = yaml.safe_load((ROOT / "evals/identity/athene.yaml").read_text())
    identity |= {"prompts": identity["prompts"][:6], "sampling": {"k": 2, "temperature": 0.8}, "max_new_tokens": 12}
    (folder / "identity.yaml").write_text(yaml.safe_dump(identity))
    probes = yaml.safe_load((ROOT / "evals/probes/toy.yaml").read_text()) | {"max_new_tokens": 12}
    for key, rows in (("neutral_texts", 5), ("swap_pairs", 10)):
        lines = read_jsonl(ROOT / "evals/probes" / probes[key])[:rows]
        (folder / probes[key]).write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "probes.yaml").write_text(yaml.safe_dump(probes))
    return folder / "identity.yaml", folder / "probes.yaml"


@pytest.mark.slow
def test_one_trial_with_every_probe_on_a_real_vocabulary(ws: Workspace, write_spec, real_shape_model_path) -> None:
    identity, probe_suite = small_suites(ws.root)
    spec = base_spec(
        model={"name": str(real_shape_model_path)},
        evals={
            "identity": str(identity),
            "benchmarks": [{"task": str(ROOT / "evals/bench/toy_facts.yaml"), "limit": BENCH_LIMIT}],
            "probes": ["overfit", "shortcut"],
            "probe_suite": str(probe_suite),
        },
    )
    spec["data"]["size"] = 32
    # TRL's periodic evaluation is not what this test is about (and costs more than the training here)
    spec["train"] |= {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 2, "eval_strategy": "no"}
    spec["search"] |= {"trials": 1}
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 0, done.stdout + done.stderr

    (trial,) = ws.study().trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    scores = trial.user_attrs["scores"]
    expected = {*metrics.IDENTITY, *metrics.OVERFIT, *metrics.SHORTCUT, "bench.retention", "bench.toy_facts.acc"}
    assert not expected - set(scores), expected - set(scores)

    client = MlflowClient(ws.tracking)
    run_id = trial.user_attrs["mlflow_run_id"]

    def artifact(name: str) -> dict:
        return json.loads(Path(client.download_artifacts(run_id, name, str(ws.root))).read_text())

    assert len(artifact("scorecard_items.json")["bench.toy_facts"]) == BENCH_LIMIT, "the benchmark's item limit"
    used = artifact("scoring_memory.json")
    # The bound: one chunk of LM-head logits, with its temporaries, within memory.LOGIT_BYTES (64 MiB),
    # where whole-batch float32 logits and their log-softmax would have needed far more.
    assert 0 < used["largest_logit_tensor_bytes"] <= used["planned_logit_bytes"] <= memory.LOGIT_BYTES
    assert used["largest_logit_tensor_bytes"] % (151_936 * 4) == 0, "whole vocabulary rows, float32"
    assert used["unchunked_logit_bytes"] > 10 * memory.LOGIT_BYTES
    assert used["largest_micro_batch_tokens"] > 0 and used["budget"]["logit_bytes"] == memory.LOGIT_BYTES
    assert (ws.root / "report" / "index.html").is_file()


def test_the_qwen_layout_has_qwen2_5_0_5b_parameter_count() -> None:
    """The benchmarks' `qwen2.5-0.5b` layout is the real model's: 494,032,768 parameters (built without memory)."""
    import torch

    from harness.toy import real_shape

    with torch.device("meta"):
        model = real_shape.model(**real_shape.LAYOUTS["qwen2.5-0.5b"])
    assert sum(p.numel() for p in model.parameters()) == 494_032_768
    assert model.config.tie_word_embeddings and model.config.num_key_value_heads == 2
