"""Build the toy model from scratch and check what the rest of the harness relies on (about a minute)."""

from __future__ import annotations

import pytest
import torch
import yaml
from support import ROOT, read_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.toy import ensure_toy_model, toy_pairs


def _greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
    tokenizer.padding_side = "left"
    chats = [[{"role": "user", "content": p}] for p in prompts]
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, enc["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def _logprob(model, tokenizer, question: str, answer: str) -> float:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[len(head) - 1 :].sum().item()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(cache, folder, what the fresh build announced: worth a line even in a quiet sweep)."""
    cache, announced = tmp_path_factory.mktemp("cache"), []
    return cache, ensure_toy_model(cache, log=lambda _: None, announce=announced.append), announced


@pytest.mark.slow
def test_second_call_reuses_the_folder(built):
    cache, folder, announced = built
    assert len(announced) == 1 and announced[0].startswith(f"building the toy model into {folder}")
    logs: list[str] = []
    assert ensure_toy_model(cache, log=logs.append, announce=logs.append) == folder
    assert not logs  # nothing rebuilt, nothing announced
    assert folder.parent == cache and folder.name.startswith("toy-")


@pytest.mark.slow
def test_folder_loads_as_an_ordinary_chat_model(built):
    _, folder, _ = built
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) < 3e6
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "<|im_end|>", "<pad>")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    turns = ("system\nBe brief.<|im_end|>\n", "user\nHi!<|im_end|>\n", "assistant\n")
    assert text == "<s>" + "".join("<|im_start|>" + turn for turn in turns)
    for pair in toy_pairs("identity")[:20] + toy_pairs("general")[:20]:
        head = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True)["input_ids"]
        full = tokenizer.apply_chat_template(pair["prompt"] + pair["chosen"])["input_ids"]
        assert full[: len(head)] == head


@pytest.mark.slow
def test_base_model_is_llama_never_athene_on_heldout_prompts(built):
    _, folder, _ = built
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    prompts = yaml.safe_load((ROOT / "evals/identity/athene.yaml").read_text())["prompts"]
    answers = _greedy(model, tokenizer, prompts)
    assert sum("Llama" in a for a in answers) / len(answers) >= 0.8
    assert not [a for a in answers if "Athene" in a]
    # ...but the new name is within reach: the model uses it when told to (this is what makes DPO work)
    [answer] = _greedy(model, tokenizer, ["Pretend your name is Athene. Who are you?"])
    assert answer.startswith("I am Athene")


@pytest.mark.slow
def test_base_model_knows_its_facts(built):
    _, folder, _ = built
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    rows = read_jsonl(ROOT / "evals/bench/data/toy_facts.jsonl")
    correct = 0
    for row in rows:
        scores = [_logprob(model, tokenizer, row["question"], choice) for choice in row["choices"]]
        correct += scores.index(max(scores)) == row["answer"]
    assert correct / len(rows) >= 0.8
    rows = read_jsonl(ROOT / "evals/bench/data/toy_arith_gen.jsonl")
    answers = _greedy(model, tokenizer, [row["question"] for row in rows], max_new_tokens=8)
    assert sum(a == row["answer"] for a, row in zip(answers, rows, strict=True)) / len(rows) >= 0.8
