"""Scoring primitives: TRL's tokenization and truncation, exact chunked log-probs and KL, bounded memory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from harness import models
from harness.scoring import lm, memory
from harness.toy import toy_pairs

# Small enough to force several micro-batches and LM-head chunks on the toy model (640 tokens).
TIGHT = memory.Budget(activation_bytes=1_000_000, logit_bytes=memory.LOGP_COPIES * 4 * 640 * 16)


@pytest.fixture
def fresh_toy(toy_model_path: Path):
    """A toy model of its own (TRL and PEFT patch the models they are given)."""
    return models.load(str(toy_model_path))


def plain(pair: dict) -> dict:
    """A conversational toy pair as plain text (TRL's standard format)."""
    return {
        "prompt": f"Question: {pair['prompt'][-1]['content']}\nAnswer:",
        "chosen": " " + pair["chosen"][0]["content"],
        "rejected": " " + pair["rejected"][0]["content"],
    }


def naive_logps(model, ids: list[int], start: int) -> list[float]:
    """One unpadded sequence, full-vocabulary log-softmax: the reference the chunked path must equal."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    return logps[max(start, 1) - 1 :].tolist()


# ---------------------------------------------------------------- tokenization as TRL trains


def trl_batch(model, tokenizer, pairs: list[dict], max_length: int, mode: str, folder: Path) -> dict[int, dict]:
    """What TRL 1.16's DPOTrainer trains on: its tokenized dataset through its collator, by pair index."""
    from datasets import Dataset
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from harness.training import dpo_config

    config = dpo_config({"max_length": max_length, "truncation_mode": mode}, folder, seed=0, has_eval=False)
    rows = [dict(p, idx=i) for i, p in enumerate(pairs)]
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    kept = list(trainer.train_dataset)
    collate = DataCollatorForPreference(tokenizer.pad_token_id, max_length=max_length, truncation_mode=mode)
    batch = collate(kept)
    n = len(kept)
    out = {}
    for j, row in enumerate(kept):
        seqs = []
        for k in (j, n + j):  # chosen rows first, then rejected
            real = batch["attention_mask"][k].bool()
            seqs.append((batch["input_ids"][k][real].tolist(), batch["completion_mask"][k][real].tolist()))
        out[row["idx"]] = {"chosen": seqs[0], "rejected": seqs[1]}
    return out


@pytest.mark.filterwarnings("ignore:The `'keep_end'` truncation mode is deprecated:FutureWarning")
@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
@pytest.mark.parametrize("kind", ["conversational", "plain"])
def test_pairs_are_tokenized_and_truncated_as_trl_trains_on_them(fresh_toy, tmp_path, mode: str, kind: str) -> None:
    model, tokenizer = fresh_toy
    pairs = toy_pairs("general")[:24]
    pairs = pairs if kind == "conversational" else [plain(p) for p in pairs]
    prompt_lengths = sorted(len(lm.prompt_ids(tokenizer, p["prompt"])) for p in pairs)
    max_length = prompt_lengths[len(pairs) // 2] + 2  # half the prompts fill it: truncation and drops both happen
    expected = trl_batch(model, tokenizer, pairs, max_length, mode, tmp_path / "trl")
    cut = lm.Truncation(max_length, mode)
    dropped = 0
    batched = lm.encode_pairs(tokenizer, pairs, cut)
    for i, pair in enumerate(pairs):
        encoded = lm.encode_pair(tokenizer, pair, cut)
        assert batched[i] == encoded, f"pair {i}: tokenized in a batch, it differs"
        if encoded is None:
            assert i not in expected, f"pair {i}: TRL trains on it, scoring drops it"
            dropped += 1
            continue
        for key, seq in zip(("chosen", "rejected"), encoded, strict=True):
            ids, mask = expected[i][key]
            assert seq.ids == ids, f"pair {i} {key}: tokens differ from TRL's"
            assert [int(t >= seq.start) for t in range(len(seq.ids))] == mask, f"pair {i} {key}: completion differs"
    assert dropped == (len(pairs) - len(expected))
    assert (dropped > 0) == (mode == "keep_start"), "keep_start drops pairs whose prompt fills max_length"


@pytest.mark.parametrize("kind", ["conversational", "plain"])
def test_a_batch_of_messy_pairs_is_tokenized_as_one_at_a_time_on_a_real_vocabulary(real_shape_model, kind) -> None:
    _, tokenizer = real_shape_model  # byte-level BPE, ChatML template, special tokens
    texts = ["Hi 👋🏽 — naïve café", "  leading spaces", "ends with <|im_end|>", "मैंने", "a\r\nb\n\n\nc", ""]
    pairs = [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": t}],
            "chosen": [{"role": "assistant", "content": t[::-1] + " ok"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for t in texts
    ]
    pairs = pairs if kind == "conversational" else [plain(p) for p in pairs]
    for cut in (lm.Truncation(None), lm.Truncation(12, "keep_start"), lm.Truncation(12, "keep_end")):
        expected = [lm.encode_pair(tokenizer, p, cut) for p in pairs]
        assert lm.encode_pairs(tokenizer, pairs, cut) == expected
        assert any(e is None for e in expected) == (cut.mode == "keep_start" and cut.max_length is not None)


def test_truncation_comes_from_the_trials_train_settings() -> None:
    assert lm.truncation() == lm.Truncation(512, "keep_start"), "the harness default (TRAIN_DEFAULTS)"
    assert lm.truncation({"max_length": 1024, "truncation_mode": "keep_end"}) == lm.Truncation(1024, "keep_end")
    assert lm.truncation({"max_length": None}).max_length is None, "null: no truncation, as in TRL"


# ---------------------------------------------------------------- exact, chunked log-probs


def test_chunked_logps_equal_a_full_log_softmax(toy_model) -> None:
    model, tokenizer = toy_model
    cut = lm.Truncation(None)
    seqs = [s for p in toy_pairs("identity")[:12] for s in lm.encode_pair(tokenizer, p, cut)]
    with memory.recording() as record:
        got = lm.token_logps(model, tokenizer, seqs, TIGHT)
    assert len(seqs) // record.largest_micro_batch_sequences > 1, "several micro-batches"
    assert record.largest_logit_tensor_bytes == 16 * 640 * 4, "chunks of 16 positions"
    for seq, values in zip(seqs, got, strict=True):
        assert values == pytest.approx(naive_logps(model, seq.ids, seq.start), abs=1e-4)
        assert len(values) == seq.scored


def test_a_lora_reference_is_the_base_with_the_adapter_off(fresh_toy) -> None:
    from peft import LoraConfig, get_peft_model

    from harness.scoring import _AdapterOff

    model, tokenizer = fresh_toy
    seqs = [s for p in toy_pairs("identity")[:4] for s in lm.encode_pair(tokenizer, p, lm.Truncation(None))]
    base = lm.token_logps(model, tokenizer, seqs, TIGHT)
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    draw = torch.Generator().manual_seed(0)  # not the global generator: its state depends on earlier tests
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=draw)  # a trained adapter: the policy now differs from its reference
    policy = lm.token_logps(peft, tokenizer, seqs, TIGHT)
    reference = lm.token_logps(_AdapterOff(peft), tokenizer, seqs, TIGHT)
    assert sum(map(sum, reference)) == pytest.approx(sum(map(sum, base)), abs=1e-3)
    moved = max(abs(p - b) for ps, bs in zip(policy, base, strict=True) for p, b in zip(ps, bs, strict=True))
    assert moved > 0.1, "the adapter changes some token's log-prob"
    assert policy[0] == pytest.approx(naive_logps(peft, seqs[0].ids, seqs[0].start), abs=1e-4)


def test_kl_is_zero_to_itself_and_exact_to_another_model(toy_model, fresh_toy) -> None:
    model, tokenizer = toy_model
    other, _ = fresh_toy
    with torch.no_grad():
        for param in other.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    texts = ["The capital of France is Paris.", "Red and blue make purple.", "Hello"]
    assert lm.kl_per_token(model, model, tokenizer, texts, budget=TIGHT) == pytest.approx(0.0, abs=1e-6)
    total, n = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
            logq = torch.log_softmax(other(input_ids=ids).logits.float(), -1)
        total += (logp.exp() * (logp - logq)).sum().item()
        n += ids.shape[1]
    assert lm.kl_per_token(model, other, tokenizer, texts, budget=TIGHT) == pytest.approx(total / n, rel=1e-4)


def test_generation_in_small_batches_gives_the_same_greedy_answers(toy_model) -> None:
    model, tokenizer = toy_model
    prompts = [p["prompt"] for p in toy_pairs("general")[:6]]
    together = lm.generate(model, tokenizer, prompts, 12)
    with memory.recording() as record:
        apart = lm.generate(model, tokenizer, prompts, 12, budget=memory.Budget(1, 1))
    assert apart == together and len(apart) == 6 and all(len(a) == 1 for a in apart)
    assert record.largest_micro_batch_sequences == 1


def test_a_sampled_step_draws_from_the_whole_tempered_distribution() -> None:
    """Draw replaces HF's torch.multinomial: the same distribution, softmax(scores / T) over every token,
    across blocks (600 tokens: two whole blocks of 256 and a part), into the tail, each row its own."""
    first = torch.full((600,), -2.0)
    first[[0, 1, 255, 256, 511, 599]] = torch.tensor([2.0, 1.0, 0.5, 1.5, 0.0, 1.0])
    first[300] = float("-inf")  # a token an earlier processor banned
    second = first.flip(0)
    rows = 20_000
    torch.manual_seed(0)
    out = lm.Draw(0.7)(None, torch.stack([first, second]).repeat(rows, 1))  # rows alternate
    assert (out.isfinite().sum(dim=1) == 1).all(), "one token left for greedy decoding to pick"
    drawn = out.argmax(dim=1)
    for i, logits in enumerate((first, second)):
        freq = torch.bincount(drawn[i::2], minlength=600) / rows
        expected = torch.softmax(logits / 0.7, dim=0)
        assert freq[logits.isinf()].sum() == 0, "never a banned token"
        assert torch.allclose(freq, expected, atol=0.015), "each token within ~4 standard errors at n=20,000"
        tail = expected < 0.01
        assert freq[tail].sum().item() == pytest.approx(expected[tail].sum().item(), abs=0.015), "the tail's mass"
    one_left = torch.tensor([[float("-inf"), 0.0, float("-inf")]])  # a vocabulary shorter than a block
    assert lm.Draw(1.0)(None, one_left).argmax().item() == 1
    with pytest.raises(ValueError, match="not a distribution"):  # as torch.multinomial refuses it
        lm.Draw(1.0)(None, torch.tensor([[float("-inf")] * 3, [0.0, 1.0, 2.0]]))


def test_sampled_answers_follow_the_seed_and_differ_between_samples(toy_model) -> None:
    model, tokenizer = toy_model
    prompts = [p["prompt"] for p in toy_pairs("general")[:3]]
    first = lm.generate(model, tokenizer, prompts, 12, samples=4, temperature=2.0, seed=1)
    assert lm.generate(model, tokenizer, prompts, 12, samples=4, temperature=2.0, seed=1) == first
    assert [len(a) for a in first] == [4, 4, 4] and any(len(set(a)) > 1 for a in first)
    assert lm.generate(model, tokenizer, prompts, 12, samples=4, temperature=2.0, seed=2) != first


def test_a_models_own_sampling_settings_change_no_answer(fresh_toy) -> None:
    """A hub model's generation_config (Qwen's samples with top_k 20, top_p 0.8, temperature 0.7) must not
    change the suite's greedy answers or its whole-vocabulary samples, nor ask for several sequences a row."""
    model, tokenizer = fresh_toy
    prompts = [p["prompt"] for p in toy_pairs("general")[:3]]

    def answers() -> tuple[list, list]:
        return lm.generate(model, tokenizer, prompts, 12), lm.generate(model, tokenizer, prompts, 12, 3, 1.5, seed=4)

    before = answers()
    config = model.generation_config
    config.do_sample, config.top_k, config.top_p, config.temperature = True, 2, 0.5, 0.3
    config.num_return_sequences = 3
    assert answers() == before


# ---------------------------------------------------------------- a real vocabulary


def test_real_vocabulary_logps_never_hold_a_batch_of_logits(real_shape_model) -> None:
    """151,936-token vocabulary, 4 sequences of 512 tokens: the unplanned path held 2.5 GB of logits."""
    model, tokenizer = real_shape_model
    gen = torch.Generator().manual_seed(0)
    seqs = [lm.Encoded(torch.randint(10, 800, (512,), generator=gen).tolist(), 100) for _ in range(4)]
    with memory.recording() as record:
        got = lm.token_logps(model, tokenizer, seqs)
    assert record.largest_logit_tensor_bytes <= memory.LOGIT_BYTES // memory.LOGP_COPIES  # float32, 55 positions
    assert record.planned_logit_bytes <= memory.LOGIT_BYTES
    assert record.unchunked_logit_bytes >= 2.4e9
    assert [len(v) for v in got] == [412] * 4
    assert all(math.isfinite(x) and x < 0 for v in got for x in v)
    assert got[1][:50] == pytest.approx(naive_logps(model, seqs[1].ids[:150], 100), abs=1e-4)
