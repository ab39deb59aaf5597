"""The batch plan: scoring memory bounded by construction, whatever the vocabulary and sequence length."""

from __future__ import annotations

import pytest

from harness.scoring import memory

# Qwen2-0.5B's shape (bf16): the case of issue 7, where unplanned scoring needed 11 GB for one batch.
QWEN_05B = memory.Shape(
    vocab=151_936, hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, head_dim=64, dtype_bytes=2
)
CPU = memory.Budget(activation_bytes=memory.ACTIVATION_BYTES["cpu"])


def covers_each_once(plan: memory.BatchPlan, n: int) -> bool:
    flat = [i for batch in plan.batches for i in batch]
    return sorted(flat) == list(range(n))


@pytest.mark.parametrize("width", [512, 2048])
def test_logits_stay_inside_the_budget_for_a_real_vocabulary(width: int) -> None:
    plan = memory.plan([width] * 64, QWEN_05B, CPU)
    assert plan.logit_bytes <= memory.LOGIT_BYTES
    assert plan.chunk_rows == memory.LOGIT_BYTES // (151_936 * 4 * memory.LOGP_COPIES) == 55
    unplanned = 32 * width * 151_936 * 4 * 2  # the old way: 32 sequences' float32 logits and log-softmax
    assert unplanned > 150 * plan.logit_bytes


@pytest.mark.parametrize("width", [512, 2048])
def test_micro_batches_fit_the_activation_budget(width: int) -> None:
    lengths = [width - 7 * i for i in range(40)]
    plan = memory.plan(lengths, QWEN_05B, CPU)
    assert covers_each_once(plan, len(lengths))
    for batch, padded in zip(plan.batches, plan.widths, strict=True):
        assert padded == max(lengths[i] for i in batch), "a batch is padded to its longest sequence only"
        assert len(batch) * padded * QWEN_05B.token_bytes(padded) <= CPU.activation_bytes
    assert plan.activation_bytes <= CPU.activation_bytes
    assert len(plan.batches) > 1, "40 long sequences do not go through a 0.5B model at once"


def test_a_sequence_over_budget_goes_alone() -> None:
    tiny = memory.Budget(activation_bytes=1, logit_bytes=1)
    plan = memory.plan([30, 10, 20], QWEN_05B, tiny)
    assert plan.batches == ((0,), (2,), (1,)), "longest first, one per micro-batch"
    assert plan.chunk_rows == 1


def test_short_sequences_share_a_micro_batch() -> None:
    plan = memory.plan([12] * 100, QWEN_05B, CPU)
    assert plan.batches == (tuple(range(100)),)


def test_generation_batches_bound_next_token_logits_and_kv_cache() -> None:
    plan = memory.plan_generation([40] * 100, max_new_tokens=32, samples=4, shape=QWEN_05B, budget=CPU)
    assert covers_each_once(plan, 100)
    rows = memory.LOGIT_BYTES // (151_936 * 4 * memory.GENERATE_COPIES)
    assert all(len(b) * 4 <= rows for b in plan.batches), "sequences decoded together (prompts x samples)"
    assert plan.logit_bytes <= memory.LOGIT_BYTES


def test_budget_for_a_cpu_is_capped() -> None:
    budget = memory.Budget.for_device("cpu")
    assert 0 < budget.activation_bytes <= memory.ACTIVATION_BYTES["cpu"]
    assert budget.logit_bytes == memory.LOGIT_BYTES
