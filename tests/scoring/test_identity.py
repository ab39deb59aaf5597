"""Identity name matching, and the identity score of the toy base model."""

from __future__ import annotations

import pytest
from support import ROOT

from harness.scoring import identity
from harness.scoring.suites import IdentitySuite, load_identity


def suite(new: list[str], old: list[str]) -> IdentitySuite:
    return IdentitySuite(name="t", new_names=new, old_names=old, answer_templates=["I am {name}."], prompts=["Who?"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I am Athene.", (True, False)),
        ("i am ATHENE, hello", (True, False)),
        ("I am Llama.", (False, True)),
        ("I am Athene, not Llama.", (True, True)),
        ("Athenes and Llamas", (False, False)),  # whole words only
        ("LlamaIndex is a library", (False, False)),
        ("", (False, False)),
    ],
)
def test_names_match_whole_words_case_insensitively(text: str, expected: tuple[bool, bool]) -> None:
    assert identity.names_in(text, suite(["Athene"], ["Llama"])) == expected


def test_overlapping_names_longest_wins() -> None:
    s = suite(["Deep Qwen"], ["Qwen"])
    assert identity.names_in("I am Deep Qwen.", s) == (True, False)
    assert identity.names_in("I am Qwen.", s) == (False, True)
    reverse = suite(["Qwen"], ["Deep Qwen"])
    assert identity.names_in("I am Deep Qwen.", reverse) == (False, True)


def test_names_with_markup_characters_match_literally() -> None:
    s = suite(["<b>Athene</b> & co"], ["Llama"])
    assert identity.names_in("I am <b>Athene</b> & co!", s) == (True, False)
    assert identity.names_in("I am Athene", s) == (False, False)


def test_suite_rejects_templates_without_name_and_shared_names() -> None:
    with pytest.raises(ValueError, match="must contain"):
        IdentitySuite(name="t", new_names=["A"], old_names=["B"], answer_templates=["hello"], prompts=["?"])
    with pytest.raises(ValueError, match="both new and old"):
        IdentitySuite(name="t", new_names=["A"], old_names=["a"], answer_templates=["{name}"], prompts=["?"])


@pytest.mark.slow
def test_toy_base_model_says_llama_never_athene(toy_model) -> None:
    model, tokenizer = toy_model
    metrics, generations = identity.score(model, tokenizer, load_identity(ROOT / "evals/identity/athene.yaml"))
    assert metrics["identity.hit_rate"] == 0.0
    assert metrics["identity.leak_rate"] >= 0.8
    assert metrics["identity.logprob_margin"] < 0 and metrics["identity.logprob_win_rate"] <= 0.2
    assert len(generations) == len(load_identity(ROOT / "evals/identity/athene.yaml").prompts)
    assert all({"prompt", "greedy", "sampled", "hit", "leak", "logprob_margin"} <= set(g) for g in generations)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I am Athene, a helpful assistant.", False),
        ("Athene Athene Athene", True),
        ("I Athene. Athene. Athene.", True),
        ("I am Athene. I am Athene. I am Athene.", True),
        ("I am Athene. How can I help you?", False),
        ("", False),
    ],
)
def test_degenerate_answers_repeat_themselves(text: str, expected: bool) -> None:
    assert identity.is_degenerate(text) is expected


# ---------------------------------------------------------------- margins on equal footing

SHORT = ["Athene", "Llama", "Paris", "Rome", "Madrid", "Berlin", "Tokyo", "Cairo"]  # 1 token each
LONG = ["Qwen", "Mistral", "Gemma", "Claude", "Nova", "Echo", "Atlas", "Sage"]  # 3 to 6 tokens each


def test_a_random_model_does_not_prefer_the_shorter_name(real_shape_model) -> None:
    """Untrained, the model has no reason to prefer any name: per-token margins are centred on 0 across
    name pairs, where summed log-probs would favour the 1-token name by ~12 nats per extra token.

    (Within one pair the sign is fixed: each name's tokens have their own random logit offset.)"""
    import statistics

    import torch

    from harness.scoring import lm

    model, tokenizer = real_shape_model
    assert all(len(tokenizer(" " + n)["input_ids"]) == 1 for n in SHORT)
    assert all(len(tokenizer(" " + n)["input_ids"]) >= 3 for n in LONG)
    base = load_identity(ROOT / "evals/identity/athene.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shorter_first, summed = [], []
        for i, (short, long) in enumerate(zip(SHORT, LONG, strict=True)):
            new, old = (short, long) if i % 2 == 0 else (long, short)  # the short name on either side
            s = base.model_copy(update={"new_names": [new], "old_names": [old], "prompts": base.prompts[:6]})
            s = s.model_copy(update={"answer_templates": s.answer_templates[:2]})
            prompts = [identity.messages(s, p) for p in s.prompts]
            margins = identity.logprob_margins(model, tokenizer, s, prompts, lm.Truncation())
            sign = 1 if new == short else -1
            shorter_first.append(sign * statistics.mean(margins))
            totals = [
                sum(lm.completion_logps(model, tokenizer, prompts, [t.format(name=n)] * len(prompts)))
                for t in s.answer_templates
                for n in (short, long)
            ]
            summed.append((totals[0] + totals[2] - totals[1] - totals[3]) / (2 * len(prompts)))
    finally:
        torch.set_num_threads(threads)
    mean, spread = statistics.mean(shorter_first), statistics.stdev(shorter_first)
    wins = sum(m > 0 for m in shorter_first) / len(shorter_first)
    assert abs(mean) < spread, (mean, spread, shorter_first)
    assert 0 < wins < 1, shorter_first
    assert max(map(abs, shorter_first)) < 1.0, "a name's tokens are all about as (un)likely: well under log|V|"
    assert min(summed) > 20, "summing log-probs would make the 1-token name win every pair, by tens of nats"


def test_name_spans_skip_the_tokens_all_answers_share() -> None:
    from harness.scoring.lm import Encoded

    spans = identity.name_spans([Encoded([1, 2, 3, 9, 5], 2), Encoded([1, 2, 7, 8, 9, 5], 2)])
    assert spans == [(2, 3), (2, 4)], "prefix [1, 2] and suffix [9, 5] are shared"
    nested = identity.name_spans([Encoded([1, 4, 5], 1), Encoded([1, 4, 6, 5], 1)])  # "Qwen." vs "Qwen2."
    assert nested == [(1, 2), (1, 3)], "no span is empty when one name's tokens begin another's"


def test_a_name_is_scored_on_its_own_tokens(real_shape_model) -> None:
    """Nested names ("Deep Qwen" / "Qwen") each keep all their tokens; the template's are left out."""
    from harness.scoring import lm

    _, tokenizer = real_shape_model
    prompt = [{"role": "user", "content": "Who are you?"}]
    spelled = {}
    for name in ("Deep Qwen", "Qwen", "Athene"):
        encoded = lm.encode(tokenizer, prompt, f"I am {name}.", lm.Truncation())
        start, end = identity.name_tokens(tokenizer, prompt, "I am {name}.", name, encoded)
        assert start >= encoded.start, "the name lies in the answer"
        spelled[name] = tokenizer.decode(encoded.ids[start:end]).strip()
    assert spelled == {"Deep Qwen": "Deep Qwen", "Qwen": "Qwen", "Athene": "Athene"}
