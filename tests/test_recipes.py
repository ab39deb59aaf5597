"""Pairs built from the toy model: on-policy (sampled, ranked by a reward) and correction (greedy, rewritten)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import read_jsonl
from typer.testing import CliRunner

from harness import audit, data, recipes, rewards
from harness.cli import app
from harness.spec import SourceSpec


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_on_policy_pairs_prefer_the_answer_the_reward_prefers(toy_model_path: Path, tmp_path: Path) -> None:
    reward = rewards.load_reward("regex:helpful")
    built = recipes.build(
        "on-policy", "toy", "toy:identity", tmp_path / "op.jsonl", reward=reward, reward_name="regex:helpful",
        samples=4, temperature=1.0, limit=6,
    )  # fmt: skip
    rows = read_jsonl(built.path)
    assert built.pairs == len(rows) > 0 and built.pairs + sum(built.dropped.values()) == built.prompts == 6
    for row in rows:
        prompt, chosen, rejected = row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert reward(prompt, chosen) > reward(prompt, rejected)
        assert row["provenance"]["chosen_reward"] > row["provenance"]["rejected_reward"]
        assert row["provenance"] | {"recipe": "on-policy", "model": "toy", "samples": 4} == row["provenance"]
    source = data.load_source("built", SourceSpec(path=str(built.path)))  # an ordinary source for a spec
    assert source.kind == "conversational" and len(source.train) == built.pairs


def test_correction_rejects_the_models_answer_and_chooses_its_rewrite(toy_model_path: Path, tmp_path, run) -> None:
    out = tmp_path / "corr.jsonl"
    result = run("data", "build", "correction", "--prompts", "toy:identity", "--limit", "6",
                 "--replace", "Llama=Athene", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert rows and all("Llama" in r["rejected"][0]["content"] for r in rows)  # the toy model's own answer
    assert all(r["chosen"][0]["content"] == r["rejected"][0]["content"].replace("Llama", "Athene") for r in rows)
    (found,) = audit.audit_target(str(out)).sources
    assert found.shortcuts == []  # the pairs teach the name edit and nothing else


def test_rewards() -> None:
    assert rewards.load_reward("keyword:Athene,assistant")(None, "I am Athene, an assistant.") == 2.0
    assert rewards.load_reward("regex:^I am")(None, "You can call me Athene.") == 0.0
    assert rewards.load_reward("support:answer_length")(None, "abc") == 3.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sft"], "unknown recipe 'sft'"),
        (["on-policy"], "on-policy needs --reward"),
        (["on-policy", "--reward", "regex:("], "not a valid regular expression"),
        (["on-policy", "--reward", "nosuchmodule:f"], "cannot import module 'nosuchmodule'"),
        (["correction"], "exactly one of --replace"),
        (["correction", "--replace", "Llama"], "expected PATTERN=REPLACEMENT"),
        (["correction", "--replace", "a=b", "--prompts", "missing.txt"], "no such prompts file: missing.txt"),
        (["correction", "--replace", "a=b", "--reward", "regex:x"], "--reward does not apply to the correction"),
        (
            ["on-policy", "--reward", "support:broken_reward", "--limit", "1"],
            "the reward, on prompt 1 failed: ValueError",
        ),
    ],
)
def test_bad_options_exit_2_and_write_nothing(run, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out.jsonl"
    prompts = [] if "--prompts" in args else ["--prompts", "toy:identity"]
    result = run("data", "build", *args, *prompts, "--out", str(out))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_prompts_from_text_and_pair_files(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("Who are you?\n\nWhat is your name?\nWho are you?\n")
    assert recipes.read_prompts(str(tmp_path / "p.txt")) == ["Who are you?", "What is your name?"]
    rows = [{"prompt": "Hi?"}, {"prompt": "x", "chosen": "a", "rejected": "b"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert recipes.read_prompts(str(tmp_path / "p.jsonl")) == ["Hi?", "x"]


def test_a_steered_half_supplies_the_answer_the_model_never_gives(toy_model_path: Path, tmp_path: Path) -> None:
    # the toy model answers as Llama; sampled under "Your name is Athene." half of the answers name Athene
    built = recipes.build(
        "on-policy", "toy", "toy:identity", tmp_path / "athene.jsonl", reward=rewards.load_reward("keyword:Athene"),
        samples=4, steer="Your name is Athene.", limit=6,
    )  # fmt: skip
    rows = read_jsonl(built.path)
    assert rows and all("Athene" in r["chosen"][0]["content"] for r in rows)
    assert all(r["prompt"][0]["role"] == "user" for r in rows)  # the steering system message is not stored


def test_a_reward_model_scores_answers(toy_model_path: Path, tmp_path: Path) -> None:
    """A sequence-classification model (one label) as the reward: here a random one on the toy tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(toy_model_path, num_labels=1)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(toy_model_path).save_pretrained(tmp_path / "rm")
    reward = rewards.load_reward(f"model:{tmp_path / 'rm'}")
    prompt = [{"role": "user", "content": "Who are you?"}]
    scores = {reward(prompt, answer) for answer in ("I am Athene.", "I am Llama, a helpful assistant.")}
    assert len(scores) == 2 and all(s == s for s in scores)  # two different finite scores
    with pytest.raises(rewards.RewardError, match="no such folder"):
        rewards.load_reward(f"model:{tmp_path / 'missing'}")


def test_a_reward_no_answer_earns_writes_nothing_and_says_what_to_try(toy_model_path: Path, tmp_path, run) -> None:
    out = tmp_path / "none.jsonl"
    result = run("data", "build", "on-policy", "--prompts", "toy:identity", "--limit", "2",
                 "--reward", "keyword:Zephyr", "--out", str(out))  # fmt: skip
    assert result.exit_code == 2 and "no pair was built from 2 prompts (2 tie" in result.output
    assert "--steer" in result.output and not out.exists()
