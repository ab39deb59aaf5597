"""Preference-pair formats: recognise a row's layout and convert it to one TRL accepts, once, at load.

TRL's three formats pass through (standard and conversational as given; implicit prompt split
into an explicit one). The others become TRL's conversational format: HH-RLHF transcripts
("\\n\\nHuman: ... \\n\\nAssistant: ..."), LLaMA-Factory's ShareGPT preference layout and its
Alpaca layout. Prompts are always split at a turn, or for plain text at a word boundary: a split
inside a word ("Assistant: W" | "ith online ...") would teach the model half-words.

Errors are RowError with no location; harness.data adds the file and line.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

FORMATS = ("standard", "conversational", "implicit", "hh", "sharegpt", "alpaca")
ROLES = ("system", "user", "assistant", "tool")

# What each format needs, as shown in error messages and the README.
FIELDS = {
    "standard": '{"prompt": str, "chosen": str, "rejected": str}',
    "conversational": '{"prompt": [{"role", "content"}, ...], "chosen": [...], "rejected": [...]}',
    "implicit": '{"chosen", "rejected"}: strings or message lists whose shared beginning is the prompt',
    "hh": '{"chosen": "\\n\\nHuman: ... \\n\\nAssistant: ...", "rejected": "..."} (HH-RLHF transcripts)',
    "sharegpt": '{"conversations": [{"from", "value"}, ...], "chosen": {"from", "value"}, '
    '"rejected": {"from", "value"}, "system"?: str}',
    "alpaca": '{"instruction": str, "input"?: str, "chosen": str, "rejected": str, "system"?: str, '
    '"history"?: [[user, assistant], ...]}',
}

# LLaMA-Factory's ShareGPT role tags (and the OpenAI names some files use instead) -> TRL roles.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_call": "assistant",
}
_ANSWER_TAGS = ("gpt", "assistant", "function_call")

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class RowError(ValueError):
    """A row does not fit its format; the message says what is wrong and what would be valid."""


def accepted() -> str:
    """The formats a source may hold, each with the fields it needs."""
    return "accepted formats:\n" + "\n".join(f"  {name}: {FIELDS[name]}" for name in FORMATS)


def convert(row: Any, declared: str = "auto") -> tuple[dict, str]:
    """One row -> ({prompt, chosen, rejected} in a TRL format, the format it was read as)."""
    if not isinstance(row, dict):
        raise RowError(f"a pair is a JSON object, got {type(row).__name__}; {accepted()}")
    fmt = detect(row) if declared == "auto" else declared
    return _CONVERTERS[fmt](row), fmt


def detect(row: dict) -> str:
    """The format a row is in, by the fields it has; RowError listing the formats when none fits."""
    chosen = row.get("chosen")
    if "conversations" in row or ("messages" in row and not isinstance(chosen, list)):
        return "sharegpt"  # (UltraFeedback's 'messages' is the chosen conversation, beside message-list answers)
    if "instruction" in row:
        return "alpaca"
    if not {"prompt", "chosen", "rejected"} & set(row):
        fields = ", ".join(sorted(map(str, row))) or "none"
        raise RowError(f"not a preference pair in any accepted format (fields: {fields}); {accepted()}")
    if is_hh_transcript(str(row.get("prompt", "")) + str(chosen or "")):
        return "hh"
    if "prompt" in row and not (isinstance(row["prompt"], str) and isinstance(chosen, list)):
        return "standard" if isinstance(chosen, str) else "conversational"
    if isinstance(row.get("prompt"), str) and _answers_only(chosen) and _answers_only(row.get("rejected")):
        return "conversational"  # a text question beside answer turns: the question is the user's turn
    # No prompt, or a text prompt beside whole conversations (HuggingFaceH4/ultrafeedback_binarized):
    # as TRL does, the prompt is what the two conversations share.
    return "implicit"


def kind(pair: dict) -> str:
    """'plain-text' or 'conversational': one training set holds one kind."""
    return "plain-text" if isinstance(pair["chosen"], str) else "conversational"


# ---------------------------------------------------------------- TRL's formats


def _explicit(row: dict, fmt: str) -> dict:
    _need(row, ("prompt", "chosen", "rejected"), fmt)
    if (
        fmt == "conversational"
        and isinstance(row["prompt"], str)
        and _answers_only(row["chosen"])
        and _answers_only(row["rejected"])
    ):
        row = row | {"prompt": [{"role": "user", "content": row["prompt"]}]}
    kinds = {key: _field_kind(row[key], key) for key in ("prompt", "chosen", "rejected")}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{k} is {v}" for k, v in kinds.items())
        raise RowError(f"fields must all be strings or all message lists ({listing})")
    if kinds["chosen"] != ("plain-text" if fmt == "standard" else "conversational"):
        other = "conversational" if fmt == "standard" else "standard"
        raise RowError(f"format {fmt} needs {FIELDS[fmt]}; this row is {other}")
    return {key: row[key] for key in ("prompt", "chosen", "rejected")}


def _implicit(row: dict) -> dict:
    _need(row, ("chosen", "rejected"), "implicit")
    kinds = {key: _field_kind(row[key], key) for key in ("chosen", "rejected")}
    if len(set(kinds.values())) > 1:
        listing = f"chosen is {kinds['chosen']}, rejected is {kinds['rejected']}"
        raise RowError(f"fields must all be strings or all message lists ({listing})")
    if kinds["chosen"] == "plain-text":
        return split_text(row["chosen"], row["rejected"])
    return split_turns(row["chosen"], row["rejected"])


def _answers_only(value: Any) -> bool:
    """A message list that starts with the assistant's turn: an answer without its question."""
    first = value[0] if isinstance(value, list) and value else None
    return isinstance(first, dict) and first.get("role") == "assistant"


def _field_kind(value: Any, key: str) -> str:
    if isinstance(value, str):
        return "plain-text"
    if isinstance(value, list) and value:
        for i, msg in enumerate(value):
            if not (isinstance(msg, dict) and isinstance(msg.get("content"), str) and msg.get("role") in ROLES):
                raise RowError(f"field '{key}', message {i}: expected {{'role': one of {list(ROLES)}, 'content': str}}")
        return "conversational"
    raise RowError(f"field '{key}': expected a string or a non-empty list of messages, got {_json_type(value)}")


# ---------------------------------------------------------------- HH-RLHF transcripts


def is_hh_transcript(text: str) -> bool:
    text = text.replace("\r\n", "\n")  # a transcript saved with Windows line ends
    return text.lstrip().startswith("Human:") and "\n\nAssistant:" in text


def _hh(row: dict) -> dict:
    _need(row, ("chosen", "rejected"), "hh")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(row.get(key, ""), str):
            raise RowError(f"field '{key}': an HH transcript is a string, got {type(row[key]).__name__}")
    row = {key: row[key].replace("\r\n", "\n") for key in ("prompt", "chosen", "rejected") if key in row}
    prompt = row.get("prompt", "")
    # The prompt is prepended unless the answers already hold the whole transcript.
    full = {key: row[key] if is_hh_transcript(row[key]) else prompt + row[key] for key in ("chosen", "rejected")}
    chosen, rejected = (hh_turns(full[key], key) for key in ("chosen", "rejected"))
    return split_turns(chosen, rejected)


def hh_turns(text: str, key: str = "chosen") -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{user: a}, {assistant: b}]; consecutive turns of one
    speaker are merged (HH has some, and strict chat templates need alternating roles)."""
    body = "\n\n" + text.lstrip()
    if not body.startswith("\n\nHuman:"):
        raise RowError(f"field '{key}': an HH transcript starts with 'Human:', got {text[:40]!r}")
    parts = _HH_TURN.split(body)[1:]  # ['Human', ' text', 'Assistant', ' text', ...]
    turns: list[dict] = []
    for speaker, content in zip(parts[::2], parts[1::2], strict=True):
        role, content = _HH_ROLES[speaker], content.strip()
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = f"{turns[-1]['content']}\n\n{content}".strip()
        else:
            turns.append({"role": role, "content": content})
    return turns


# ---------------------------------------------------------------- LLaMA-Factory layouts


def _sharegpt(row: dict) -> dict:
    key = "messages" if "messages" in row else "conversations"
    _need(row, (key, "chosen", "rejected"), "sharegpt")
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise RowError(f"field '{key}': expected a non-empty list of {{from, value}} turns")
    prompt = [_sharegpt_turn(turn, f"{key}, turn {i}") for i, turn in enumerate(turns)]
    system = row.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise RowError(f"field 'system': expected a string, got {_json_type(system)}")
        if system and prompt[0]["role"] != "system":
            prompt.insert(0, {"role": "system", "content": system})
    if prompt[-1]["role"] not in ("user", "tool"):
        raise RowError(f"field '{key}': the last turn must be from human (or observation), the one answered")
    chosen, rejected = (_sharegpt_answer(row[k], k) for k in ("chosen", "rejected"))
    return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}


def _sharegpt_turn(turn: Any, at: str) -> dict:
    if not isinstance(turn, dict):
        raise RowError(f"field '{at}': expected {{'from': ..., 'value': str}}, got {type(turn).__name__}")
    tag = turn.get("from", turn.get("role"))
    value = turn.get("value", turn.get("content"))
    if tag not in SHAREGPT_ROLES:
        raise RowError(f"field '{at}': unknown role tag {tag!r}; one of {', '.join(SHAREGPT_ROLES)}")
    if not isinstance(value, str):
        raise RowError(f"field '{at}': 'value' must be a string, got {type(value).__name__}")
    return {"role": SHAREGPT_ROLES[tag], "content": value}


def _sharegpt_answer(answer: Any, key: str) -> dict:
    if isinstance(answer, str):
        return {"role": "assistant", "content": answer}
    message = _sharegpt_turn(answer, key)
    if answer.get("from", answer.get("role")) not in _ANSWER_TAGS:
        raise RowError(f"field '{key}': an answer is from {' or '.join(_ANSWER_TAGS)}")
    return message


def _alpaca(row: dict) -> dict:
    _need(row, ("instruction", "chosen", "rejected"), "alpaca")
    for key in ("instruction", "input", "chosen", "rejected", "system"):
        optional = key in ("input", "system")
        if not isinstance(row.get(key), str) and not (optional and row.get(key) is None):
            raise RowError(f"field '{key}': expected a string, got {_json_type(row.get(key))}")
    prompt = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowError("field 'history': expected a list of [user, assistant] pairs")
    for i, turn in enumerate(history):
        if not (isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise RowError(f"field 'history', item {i}: expected [user, assistant] strings")
        prompt += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    query = "\n".join(part for part in (row["instruction"], row.get("input") or "") if part)  # LLaMA-Factory's join
    prompt.append({"role": "user", "content": query})
    answer = lambda key: [{"role": "assistant", "content": row[key]}]  # noqa: E731
    return {"prompt": prompt, "chosen": answer("chosen"), "rejected": answer("rejected")}


def _json_type(value: Any) -> str:
    """A value's type as the JSON file spells it."""
    names = {type(None): "null", bool: "true/false", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), f"a number ({value!r})" if isinstance(value, int | float) else type(value).__name__)


def _need(row: dict, fields: tuple[str, ...], fmt: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise RowError(
            f"missing field '{missing[0]}' (format {fmt} needs {FIELDS[fmt]}; "
            "set the source's 'format:' if this file is in another one)"
        )


# ---------------------------------------------------------------- splitting a shared prompt off


def split_turns(chosen: list[dict], rejected: list[dict]) -> dict:
    """Messages -> the shared turns as prompt, the rest as completions starting at an assistant turn.

    Usually the transcripts differ only in the last assistant turn, which is then the completion.
    """
    k = _shared(chosen, rejected)

    def answer_at(turns: list[dict]) -> bool:
        return k < len(turns) and turns[k]["role"] == "assistant"

    while k > 0 and not (answer_at(chosen) and answer_at(rejected)):
        k -= 1
    if k == 0:
        raise RowError("chosen and rejected share no prompt ending where an assistant turn starts in both")
    return {"prompt": chosen[:k], "chosen": chosen[k:], "rejected": rejected[k:]}


def split_text(chosen: str, rejected: str) -> dict:
    """Plain text -> the shared beginning as prompt, backed off to a word boundary.

    As TRL does, the space before the completions starts them (" good" / " bad").
    """
    k = _shared(chosen, rejected)
    if k in (len(chosen), len(rejected)) and chosen != rejected:
        k -= 1  # one answer extends the other ("yes" / "yes, sure"): both keep their last shared word
    while k > 0 and (_in_word(chosen, k) or _in_word(rejected, k)):
        k -= 1
    while k > 0 and chosen[k - 1] == " ":
        k -= 1
    if k == 0 or not chosen[:k].strip():
        raise RowError("implicit-prompt pair: chosen and rejected share no prompt")
    return {"prompt": chosen[:k], "chosen": chosen[k:], "rejected": rejected[k:]}


def _shared(a: Sequence, b: Sequence) -> int:
    """Length of the common beginning of two strings or message lists."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def _in_word(text: str, k: int) -> bool:
    """Would a cut before text[k] fall inside a word, or before a combining mark (a Devanagari or Thai vowel sign,
    e + U+0301), which belongs to the character before it in every script?"""
    if k >= len(text):
        return False
    return unicodedata.category(text[k]).startswith("M") or (_word_char(text[k - 1]) and _word_char(text[k]))


def _word_char(ch: str) -> bool:
    # Scripts written without spaces (CJK, kana, Thai) may be cut between any two characters.
    unspaced = "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\u0e00" <= ch <= "\u0e7f"
    return (ch.isalnum() or unicodedata.category(ch).startswith("M") or ch in "'’_") and not unspaced


_CONVERTERS = {
    "standard": lambda row: _explicit(row, "standard"),
    "conversational": lambda row: _explicit(row, "conversational"),
    "implicit": _implicit,
    "hh": _hh,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
}
