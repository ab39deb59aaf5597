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
