"""The study's reference log-prob cache: training from it equals TRL computing the reference itself,
it misses when anything the reference depends on changes, and a second trial reuses the first one's pairs.

Each training here is TRL's DPOTrainer, built through the harness's adapter (harness.training) on the toy
model: 8 pairs, batches of 4, 2 steps, one held-out evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import models, refcache, training
from harness.refcache import RefCache
from harness.toy import toy_pairs

TRAIN = {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1}
# Wall-clock figures TRL logs with the metrics; everything else it logs must match.
_TIMINGS = ("runtime", "per_second", "total_flos")


@pytest.fixture(scope="module")
def pairs() -> tuple[list[dict], list[dict]]:
    rows = toy_pairs("identity")
    return rows[:8], rows[8:12]


def train(
    folder: Path,
    model_path: Path,
    pairs: tuple[list[dict], list[dict]],
    cache: RefCache | None = None,
    lora: bool = False,
    **settings: Any,
) -> tuple[dict[str, Any], list[tuple[int, dict]]]:
    """Train a fresh toy model; returns its trained weights and every metric TRL logged."""
    import transformers

    transformers.set_seed(0)
    model, tokenizer = models.load(str(model_path))
    config = training.dpo_config(TRAIN | settings, folder, 0, eval_every=2, precompute_ref=cache is not None)
    logs: list[tuple[int, dict]] = []
    peft = training.lora_config(r=4, alpha=8, dropout=0.0, target_modules="all-linear") if lora else None
    trained = training.train_dpo(
        model, tokenizer, *pairs, config, peft, on_log=lambda step, m: logs.append((step, m)), ref_cache=cache
    )
    weights = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    return weights, [(step, {k: v for k, v in m.items() if not k.endswith(_TIMINGS)}) for step, m in logs]


def study_cache(folder: Path, model_path: Path, **settings: Any) -> RefCache:
    """The cache as a trial opens it: identity from the toy model, its tokenizer and the TRL settings."""
    model, tokenizer = models.load(str(model_path))
    config = training.dpo_config(TRAIN | settings, folder, 0, precompute_ref=True)
    reference = {"name": str(model_path), "weights": refcache.weights_fingerprint(model)}
    key = refcache.identity(
        reference,
        refcache.tokenizer_fingerprint(tokenizer),
        training.resolved_train_settings(config, list(training.REFERENCE_SETTINGS)),
    )
    return RefCache.open(folder, key)


def assert_same_training(expected: tuple, got: tuple) -> None:
    (want_weights, want_logs), (weights, logs) = expected, got
    assert [step for step, _ in logs] == [step for step, _ in want_logs]
    for (_, want), (_, metrics) in zip(want_logs, logs, strict=True):
        assert metrics.keys() == want.keys()
        assert metrics == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert weights.keys() == want_weights.keys()
    # Adam normalises each update, so a rounding-level difference in a near-zero gradient (the reference
    # forward batched differently) can move a weight by a small fraction of the learning rate.
    for name, tensor in weights.items():
        assert tensor.allclose(want_weights[name], rtol=0, atol=TRAIN["learning_rate"] / 10), name


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_training_from_the_cache_equals_trl_computing_the_reference(
    tmp_path: Path, toy_model_path: Path, pairs: tuple, loss: str, lora: bool
) -> None:
    own = train(tmp_path / "own", toy_model_path, pairs, lora=lora, loss_type=loss)
    cache = study_cache(tmp_path / "study", toy_model_path, loss_type=loss)
    cold = train(tmp_path / "cold", toy_model_path, pairs, cache, lora=lora, loss_type=loss)
    assert (cache.hits, cache.misses) == (0, 12)  # TRL computed every pair, the cache kept them
    assert_same_training(own, cold)
    cache = study_cache(tmp_path / "study", toy_model_path, loss_type=loss)
    warm = train(tmp_path / "warm", toy_model_path, pairs, cache, lora=lora, loss_type=loss)
    assert (cache.hits, cache.misses) == (12, 0)  # no reference forward at all
    assert_same_training(own, warm)
