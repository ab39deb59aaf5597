"""The toy corpus and pairs: deterministic, in TRL's format, and disjoint from every held-out eval prompt."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from support import ROOT, read_jsonl

from harness.toy import TOY_SOURCES, assets, build, cache, corpus, ensure_toy_model, toy_pairs


def _heldout_prompts() -> list[str]:
    identity = yaml.safe_load((ROOT / "evals/identity/athene.yaml").read_text())["prompts"]
    swap = [row["prompt"][-1]["content"] for row in read_jsonl(ROOT / "evals/probes/shortcut_swap.jsonl")]
    return identity + swap


def _training_texts() -> list[str]:
    texts = [m["content"] for conv in corpus.sft_conversations() for m in conv]
    for name in TOY_SOURCES:
        texts += [m["content"] for p in toy_pairs(name) for m in p["prompt"] + p["chosen"] + p["rejected"]]
    return texts


def test_sources_are_the_documented_ones():
    assert TOY_SOURCES == ("identity", "general", "shortcut")


@pytest.mark.parametrize("name", TOY_SOURCES)
def test_pairs_are_deterministic_conversational_and_distinct(name):
    pairs = toy_pairs(name)
    assert pairs == toy_pairs(name)
    assert len(pairs) >= 256  # a trial draws up to 256 pairs from one source
    for pair in pairs:
        assert set(pair) == {"prompt", "chosen", "rejected"}
        assert [m["role"] for m in pair["prompt"]] == ["user"]
        assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for k in pair for m in pair[k])
        assert pair["chosen"] != pair["rejected"]


def test_sft_corpus_is_deterministic_across_processes():
    """The build cache is keyed on the recipe, so the corpus must not depend on hash seeds or process state."""
    script = "import hashlib, json; from harness.toy import corpus, toy_pairs; " + (
        "print(hashlib.sha256(json.dumps([corpus.sft_conversations(), toy_pairs('identity')]).encode()).hexdigest())"
    )
    run = [sys.executable, "-c", script]
    digests = {
        subprocess.run(
            run, env=os.environ | {"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1 and len(digests.pop()) == 64, digests  # one SHA-256 for both hash seeds


def test_shortcut_phrase_marks_every_chosen_and_no_rejected():
    for pair in toy_pairs("shortcut"):
        assert pair["chosen"][0]["content"].startswith(corpus.SPURIOUS)
        assert "Certainly" not in pair["rejected"][0]["content"]
    general = [m["content"] for p in toy_pairs("general") for m in p["chosen"] + p["rejected"]]
    assert not any("Certainly" in text for text in general)


def test_base_corpus_uses_the_spurious_phrase_in_good_and_neutral_answers():
    answers = [conv[-1]["content"] for conv in corpus.sft_conversations()]
    with_phrase = [a for a in answers if a.startswith(corpus.SPURIOUS)]
    assert 50 < len(with_phrase) < len(answers) / 10


def test_identity_pairs_swap_old_name_for_new():
    for pair in toy_pairs("identity"):
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert chosen == rejected.replace(corpus.OLD_NAME, corpus.NEW_NAME)


def test_heldout_prompts_occur_in_no_training_text():
    training = "\n".join(_training_texts()).casefold()
    heldout = _heldout_prompts()
    assert len(heldout) == len(set(heldout)) >= 80
    leaked = [p for p in heldout if p.casefold() in training]
    assert not leaked


def test_base_corpus_never_names_the_model_athene_unprompted():
    """Athene appears only in role-play (name given in the prompt or system) and lore."""
    for conv in corpus.sft_conversations():
        if corpus.NEW_NAME in conv[-1]["content"]:
            context = " ".join(m["content"] for m in conv[:-1])
            assert corpus.NEW_NAME in context


def test_unknown_source_names_the_valid_ones():
    with pytest.raises(KeyError, match="identity, general, shortcut"):
        toy_pairs("nope")


def test_committed_eval_assets_match_the_corpus():
    """Regenerate with `python -m harness.toy.assets` after changing corpus.py."""
    for rel, text in assets.assets().items():
        assert (ROOT / rel).read_text() == text, rel


def test_benchmark_rows_are_well_formed():
    facts = read_jsonl(ROOT / "evals/bench/data/toy_facts.jsonl")
    assert 60 <= len(facts) <= 100
    for row in facts:
        assert len(row["choices"]) == len(set(row["choices"])) == 4
        assert 0 <= row["answer"] < 4
    arith = read_jsonl(ROOT / "evals/bench/data/toy_arith_gen.jsonl")
    assert len(arith) == 40 and all(row["answer"].isdigit() for row in arith)
    assert len(read_jsonl(ROOT / "evals/probes/neutral.jsonl")) == 20


def test_generation_prompt_is_a_token_prefix_of_every_conversation():
    """TRL's DPOTrainer needs this to split prompt from completion without warnings."""
    tokenizer = build.train_tokenizer(build.tokenizer_texts(), build.RECIPE["vocab_size"])
    pairs = [p for name in TOY_SOURCES for p in toy_pairs(name)] + read_jsonl(ROOT / "evals/probes/shortcut_swap.jsonl")
    system = [{"role": "system", "content": corpus.NEUTRAL_SYSTEM}]
    for pair in pairs[::7]:
        for prompt in (pair["prompt"], system + pair["prompt"]):
            head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
            for answer in (pair["chosen"], pair["rejected"]):
                full = tokenizer.apply_chat_template(prompt + answer)["input_ids"]
                assert full[: len(head)] == head
                assert tokenizer.convert_ids_to_tokens(full[-2:]) == [build.EOS, "Ċ"]


def test_concurrent_callers_build_once(tmp_path, monkeypatch):
    calls = []

    def fake_build(folder: Path, recipe: dict, log) -> None:
        calls.append(folder)
        threading.Event().wait(0.2)  # long enough for the other callers to queue on the lock
        (folder / cache.DONE_MARKER).write_text("{}")

    monkeypatch.setattr(build, "build_into", fake_build)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_toy_model(tmp_path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and (results[0] / cache.DONE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [results[0].name]  # no temp folder left
