"""Preference formats: HH transcripts, ShareGPT and Alpaca files become TRL's conversational format;
implicit prompts are split at a turn or a word boundary, never inside a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import ROOT

from harness import formats
from harness.data import DataError, load_sources
from harness.spec import DataSpec

FIXTURES = ROOT / "tests" / "fixtures" / "data"


def load(path: Path | str, fmt: str = "auto", **data: object):
    spec = DataSpec(sources={"src": {"path": str(path), "format": fmt}}, eval_fraction=0.0, **data)
    return load_sources(spec, seed=0)["src"]


def roles(messages: list[dict]) -> list[str]:
    return [m["role"] for m in messages]


# ---------------------------------------------------------------- HH-RLHF transcripts


def test_hh_transcripts_become_conversations_split_at_the_last_answer() -> None:
    source = load(FIXTURES / "hh.jsonl")
    assert source.kind == "conversational" and source.formats == {"hh": 6}
    assert source.dropped_identical == 1 and len(source.train) == 5
    bank, japanese, hey, wifi, capital = source.train
    # multi-turn: earlier turns are the prompt, the last assistant turn whole is the answer
    assert roles(bank["prompt"]) == ["user", "assistant", "user"]
    assert bank["prompt"][1]["content"] == "Do you have a debit card or online access to your account?"
    assert bank["chosen"] == [
        {"role": "assistant", "content": "With online banking you can send the payment from your phone or laptop."}
    ]
    assert bank["rejected"][0]["content"] == "Well, you could ask your landlord to wait until tomorrow."
    assert japanese["prompt"] == [{"role": "user", "content": "¿Cómo se dice «gracias» en japonés? 日本語で"}]
    assert japanese["chosen"][0]["content"].startswith("En japonés se dice «ありがとう»")
    # consecutive human turns merge (strict chat templates need alternating roles); empty answers stay empty
    assert hey["prompt"] == [{"role": "user", "content": "hey\n\nare you there?"}]
    assert hey["rejected"] == [{"role": "assistant", "content": ""}]
    assert (
        wifi["chosen"][0]["content"].startswith("I'm sorry, I can't help")
        and "\n\nIf you need" in (wifi["chosen"][0]["content"])
    )
    assert wifi["rejected"][0]["content"].startswith("I'm sure your neighbor")
    assert capital == {
        "prompt": [{"role": "user", "content": "What's the capital of Australia?"}],
        "chosen": [{"role": "assistant", "content": "Canberra."}],
        "rejected": [{"role": "assistant", "content": "Sydney."}],
    }


def test_hh_transcripts_with_windows_line_ends_are_hh() -> None:
    transcript = "\r\n\r\nHuman: Hi\r\n\r\nAssistant: "
    row = {"chosen": transcript + "Hello!", "rejected": transcript + "Go."}
    pair, fmt = formats.convert(row)
    assert fmt == "hh" and pair["prompt"] == [{"role": "user", "content": "Hi"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "Hello!"}]
    assert formats.convert(row | {"chosen": row["chosen"].replace("\r\n", "\n")})[0] == pair


def test_hh_never_splits_inside_a_word_where_trl_does() -> None:
    """TRL's character-level extract_prompt cuts 'Assistant: W' | 'ith online'; the turn split does not."""
    from trl.data_utils import extract_prompt

    rows = [json.loads(line) for line in (FIXTURES / "hh.jsonl").read_text().splitlines()]
    trl_mid_word = [r for r in rows if "prompt" not in r and _mid_word(extract_prompt(r))]
    assert len(trl_mid_word) >= 2  # the fixture reproduces the problem
    for row in trl_mid_word:
        pair, _ = formats.convert(row)
        last_chosen = row["chosen"].rsplit("\n\nAssistant:", 1)[1].strip()
        assert pair["chosen"][-1]["content"] == last_chosen


def _mid_word(pair: dict) -> bool:
    return pair["prompt"][-1:].isalnum() and (pair["chosen"][:1].isalnum() or pair["rejected"][:1].isalnum())


def test_hh_pairs_differing_in_an_earlier_turn_keep_every_differing_turn() -> None:
    shared = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: "
    row = {
        "chosen": shared + "Tell me about cats.\n\nAssistant: Cats purr.",
        "rejected": shared + "Tell me about dogs.\n\nAssistant: Dogs bark.",
    }
    pair, fmt = formats.convert(row)
    assert fmt == "hh"
    # the prompt is what both share up to an answer; the answers carry every turn that differs
    assert pair["prompt"] == [{"role": "user", "content": "Hi"}]
    assert roles(pair["chosen"]) == ["assistant", "user", "assistant"]
    assert pair["rejected"][1:] == [
        {"role": "user", "content": "Tell me about dogs."},
        {"role": "assistant", "content": "Dogs bark."},
    ]


# ---------------------------------------------------------------- plain implicit prompts


@pytest.mark.parametrize(
    ("chosen", "rejected", "prompt", "answers"),
    [
        ("Q: capital of France? A: Paris", "Q: capital of France? A: Lyon", "Q: capital of France? A:", " Paris"),
        ("Q: 2+2? A: Four", "Q: 2+2? A: Five", "Q: 2+2? A:", " Four"),  # shared 'F' is not a prompt
        ("Answer: yes", "Answer: yes, sure", "Answer:", " yes"),  # one answer extends the other
        ("Say it: don't", "Say it: do not", "Say it:", " don't"),  # an apostrophe is part of the word
        ("问：你好吗？答：很好", "问：你好吗？答：不好", "问：你好吗？答：", "很好"),  # no spaces to wait for
        ("उत्तर है राम", "उत्तर है रीमा", "उत्तर है", " राम"),  # a vowel sign is part of its word
        ("le cafe\u0301", "le cafe\u0300", "le", " cafe\u0301"),  # so is a combining accent
        ("ถาม: กิน", "ถาม: กับ", "ถาม:", " กิน"),  # Thai may be cut between letters, never before a vowel sign
    ],
)
def test_implicit_text_prompt_ends_at_a_word_boundary(chosen: str, rejected: str, prompt: str, answers: str) -> None:
    pair, fmt = formats.convert({"chosen": chosen, "rejected": rejected})
    assert fmt == "implicit"
    assert pair["prompt"] == prompt and pair["chosen"] == answers
    assert pair["prompt"] + pair["rejected"] == rejected


def test_a_text_prompt_beside_answer_turns_is_the_users_turn() -> None:
    """{"prompt": "q?", "chosen": [assistant turn], ...}: the answers hold no question, so the text prompt is it."""
    answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    row = {"prompt": "What is 2+2?", "chosen": answer("4"), "rejected": answer("5")}
    pair, fmt = formats.convert(row)
    assert fmt == "conversational"
    assert pair["prompt"] == [{"role": "user", "content": "What is 2+2?"}]
    assert (pair["chosen"], pair["rejected"]) == (answer("4"), answer("5"))
    assert formats.convert(row, "conversational")[0] == pair


def test_text_prompt_beside_whole_conversations_is_split_from_them() -> None:
    """HuggingFaceH4/ultrafeedback_binarized rows: a text prompt, conversations as answers, 'messages' too."""
    user = {"role": "user", "content": "Write a haiku about rain."}
    chosen = [user, {"role": "assistant", "content": "Soft rain on the roof"}]
    rejected = [user, {"role": "assistant", "content": "Rain is water."}]
    row = {"prompt": user["content"], "prompt_id": "ab12", "chosen": chosen, "rejected": rejected, "messages": chosen}
    pair, fmt = formats.convert(row)
    assert fmt == "implicit"
    assert pair == {"prompt": [user], "chosen": chosen[1:], "rejected": rejected[1:]}


def test_declared_implicit_reads_hh_text_as_plain_text_split_between_words(tmp_path: Path) -> None:
    transcripts = [line for line in (FIXTURES / "hh.jsonl").read_text().splitlines() if '"prompt"' not in line]
    (tmp_path / "hh.jsonl").write_text("\n".join(transcripts) + "\n")
    source = load(tmp_path / "hh.jsonl", fmt="implicit")
    assert source.kind == "plain-text" and source.formats == {"implicit": 5}
    bank = source.train[0]
    assert bank["prompt"].endswith("\n\nAssistant:")
    assert bank["chosen"].startswith(" With online") and bank["rejected"].startswith(" Well,")


# ---------------------------------------------------------------- LLaMA-Factory layouts


def test_sharegpt_file_becomes_conversations() -> None:
    source = load(FIXTURES / "sharegpt.json")
    assert source.kind == "conversational" and source.formats == {"sharegpt": 3}
    who, prime, weather = source.train
    assert who["prompt"] == [{"role": "user", "content": "Who are you?"}]
    assert who["chosen"] == [{"role": "assistant", "content": "I'm Athene, an assistant."}]
    assert prime["prompt"][0] == {"role": "system", "content": "You are a concise assistant."}
    assert roles(prime["prompt"]) == ["system", "user", "assistant", "user"]
    assert roles(weather["prompt"]) == ["user", "assistant", "tool"]  # function_call / observation
    assert weather["rejected"] == [{"role": "assistant", "content": "It is sunny in Paris."}]


def test_alpaca_file_becomes_conversations() -> None:
    source = load(FIXTURES / "alpaca.json")
    assert source.formats == {"alpaca": 3}
    translate, times, name = source.train
    assert translate["prompt"] == [{"role": "user", "content": "Translate to French.\nGood morning"}]
    assert translate["chosen"] == [{"role": "assistant", "content": "Bonjour"}]
    assert times["prompt"] == [{"role": "user", "content": "What is 12 × 3?"}]
    assert name["prompt"] == [
        {"role": "system", "content": "You are Athene."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What's your name?"},
    ]


def test_converted_sources_mix_with_the_toy_world() -> None:
    spec = DataSpec(
        sources={"hh": {"path": str(FIXTURES / "hh.jsonl")}, "toy": {"path": "toy:general"}},
        eval_fraction=0.0,
    )
    loaded = load_sources(spec, seed=0)
    assert {s.kind for s in loaded.values()} == {"conversational"}


# ---------------------------------------------------------------- declared formats and bad rows


def test_declared_format_that_does_not_fit_names_its_fields(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load(FIXTURES / "alpaca.json", fmt="sharegpt")
    message = str(info.value)
    assert f"{FIXTURES / 'alpaca.json'}:2:" in message
    assert "missing field 'conversations'" in message and "declared format: sharegpt" in message


def test_row_in_no_format_lists_every_format_with_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    good = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"question": "Q", "answer": "A"}) + "\n")
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: not a preference pair in any accepted format (fields: answer, question)")
    for name in formats.FORMATS:
        assert f"  {name}: {formats.FIELDS[name]}" in message


def test_bad_row_in_a_json_array_is_located_by_line(tmp_path: Path) -> None:
    rows = json.loads((FIXTURES / "sharegpt.json").read_text())
    rows[1]["conversations"][0]["from"] = "narrator"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows, indent=2))
    start = [i for i, line in enumerate(path.read_text().splitlines()) if line == "  {"][1] + 1  # the second row
    with pytest.raises(DataError, match=rf":{start}: field 'conversations, turn 0': unknown role tag 'narrator'"):
        load(path)


HUMAN = {"from": "human", "value": "Q"}


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"conversations": [HUMAN], "chosen": {"from": "human", "value": "A"}, "rejected": "B"}, "an answer is from"),
        ({"conversations": [HUMAN, {"from": "gpt", "value": "A"}], "chosen": "A", "rejected": "B"}, "the last turn"),
        ({"instruction": "Q", "chosen": "A", "rejected": 2}, "field 'rejected': expected a string"),
        ({"instruction": "Q", "chosen": None, "rejected": "B"}, "field 'chosen': expected a string, got null"),
        ({"instruction": None, "input": "", "chosen": "A", "rejected": "B"}, "field 'instruction': .* got null"),
        ({"instruction": "Q", "chosen": "A", "rejected": "B", "history": [["only one"]]}, "field 'history', item 0"),
        ({"chosen": "Hi there", "rejected": "Hello"}, "share no prompt"),  # only a shared 'H'
        ({"chosen": "\n\nHuman: Hi\n\nAssistant: A", "rejected": "\n\nHuman: Yo\n\nAssistant: A"}, "share no prompt"),
    ],
)
def test_malformed_rows_of_each_format(tmp_path: Path, row: dict, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"{path}:1: .*{fragment}"):
        load(path)


def test_invalid_json_array_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"prompt": "Q", "chosen": "A", "rejected": "B"},\n  {"prompt": "Q",\n]\n')
    with pytest.raises(DataError, match=rf"{path}:4: not valid JSON"):
        load(path)


def test_unknown_format_is_a_spec_error(write_spec) -> None:
    from support import base_spec

    from harness.spec import SpecError, load_spec

    spec = base_spec(data__sources={"identity": {"path": "toy:identity", "format": "jsonl"}}, data__mix=None)
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(spec))
    (key, line, message), *_ = info.value.problems
    assert key == "data.sources.identity.format" and line is not None and "'sharegpt'" in message


# ---------------------------------------------------------------- through the CLI


def converted_spec(**overrides: object) -> dict:
    from support import base_spec

    sources = {
        "hh": {"path": str(FIXTURES / "hh.jsonl")},
        "sharegpt": {"path": str(FIXTURES / "sharegpt.json"), "format": "sharegpt"},
        "alpaca": {"path": str(FIXTURES / "alpaca.json")},
        "identity": {"path": "toy:identity"},
    }
    return base_spec(data__sources=sources, data__mix={"hh": 1, "sharegpt": 1, "alpaca": 1, "identity": 2}, **overrides)


def test_validate_says_how_each_source_was_read(write_spec) -> None:
    import subprocess
    import sys

    spec = converted_spec()
    spec["data"]["sources"]["web"] = {"hf": "trl-lib/ultrafeedback_binarized", "split": "train_prefs"}
    spec["data"]["sources"]["hh_hub"] = {"hf": "example-org/preferences", "name": "en", "split": "test"}
    spec["data"]["mix"] |= {"web": 1, "hh_hub": 1}
    path = write_spec(spec)
    shown = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(path)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert "web: hub dataset trl-lib/ultrafeedback_binarized (split train_prefs): read when the sweep runs" in lines
    assert "hh_hub: hub dataset example-org/preferences (split test, config en): read when the sweep runs" in lines
    assert "hh: 4 training + 1 held-out pairs (6 hh rows); 1 dropped (chosen = rejected)" in lines
    assert "sharegpt: 2 training + 1 held-out pairs (3 sharegpt rows)" in lines
    assert "alpaca: 2 training + 1 held-out pairs (3 alpaca rows)" in lines


@pytest.mark.slow
def test_sweep_trains_on_converted_sources(ws, write_spec) -> None:
    spec = converted_spec(train__max_steps=4, search__trials=1)
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 0, done.stdout + done.stderr
    (trial,) = ws.study().trials
    assert trial.state.name == "COMPLETE" and trial.user_attrs["seconds"]["time.eval_share"] > 0
    pairs = json.loads((ws.root / "outputs" / "test" / "trial-000" / "pairs.json").read_text())
    trained = [json.dumps(p, sort_keys=True) for p in pairs["train"]]
    sources = load_sources(DataSpec.model_validate(spec["data"]), seed=0)
    for name in ("hh", "sharegpt", "alpaca"):  # every converted pair is drawn (small sources cycle)
        assert {json.dumps(p, sort_keys=True) for p in sources[name].train} <= set(trained), name
