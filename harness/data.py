"""Preference data: load sources, hold out pairs per source, draw a trial's mix.

A pair is a dict in one of TRL's formats: standard (prompt/chosen/rejected strings),
conversational (lists of {role, content} messages), or implicit prompt (chosen/rejected only,
the prompt being their shared beginning). Every source of a spec must share one kind
(strings or messages), since one training set cannot hold both.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spec import DataSpec, SourceSpec, resolve_path

ROLES = ("system", "user", "assistant", "tool")


class DataError(Exception):
    """A data source is unusable; the message names the file, line and field."""


@dataclass
class Source:
    """One loaded source: its training pool and its held-out pairs."""

    name: str
    train: list[dict]
    heldout: list[dict]
    dropped_identical: int = 0
    kind: str = "conversational"


@dataclass
class TrialData:
    """What one trial trains and evaluates on."""

    train: list[dict]
    heldout: list[dict]
    counts: dict[str, int] = field(default_factory=dict)
    dropped_identical: dict[str, int] = field(default_factory=dict)


def source_problem(path: str, spec_dir: Path | None) -> str | None:
    """A cheap check for the spec validator: does this source location exist?"""
    if path.startswith("toy:"):
        from harness.toy import TOY_SOURCES

        name = path.removeprefix("toy:")
        if name not in TOY_SOURCES:
            return f"unknown built-in source '{path}'. Available: {', '.join('toy:' + n for n in TOY_SOURCES)}"
        return None
    if not path.endswith((".jsonl", ".json")):
        return f"expected toy:<name> or a .jsonl file, got {path!r}"
    if resolve_path(path, spec_dir) is None:
        return f"no such file: {path}"
    return None


def load_sources(spec: DataSpec, seed: int, spec_dir: Path | None = None) -> dict[str, Source]:
    """Load and validate every source, then hold out `eval_fraction` of each (same split for every trial)."""
    loaded = {name: _load(name, src, spec_dir) for name, src in spec.sources.items()}
    kinds = {name: src.kind for name, src in loaded.items()}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{n}: {k}" for n, k in kinds.items())
        raise DataError(f"sources mix conversational and plain-text pairs ({listing}); use one kind")
    for name, source in loaded.items():
        source.train, source.heldout = _split(source.train, spec.eval_fraction, f"{seed}:{name}")
    return loaded


def draw(sources: dict[str, Source], weights: dict[str, float], size: int, seed: int) -> TrialData:
    """Draw `size` training pairs by mix weight, reproducibly.

    Each source is read along one seeded permutation, so a larger weight adds pairs and never
    swaps them: trials with the same mix train on the same pairs, and nearby mixes on nearby data.
    """
    if sum(weights.values()) <= 0:
        raise DataError(f"every mix weight is 0 in this trial ({weights}); nothing to draw")
    counts = _apportion(weights, size)
    train: list[dict] = []
    for name, count in counts.items():
        pool = sources[name].train
        if count and not pool:
            raise DataError(f"source '{name}' has no training pairs left after holding out eval pairs")
        order = list(range(len(pool)))
        random.Random(f"{seed}:{name}:draw").shuffle(order)
        train += [pool[order[i % len(pool)]] for i in range(count)]  # cycles when asked for more than exist
    random.Random(f"{seed}:mix").shuffle(train)
    heldout = [pair for s in sources.values() for pair in s.heldout]
    dropped = {name: s.dropped_identical for name, s in sources.items()}
    return TrialData(train=train, heldout=heldout, counts=counts, dropped_identical=dropped)


def _apportion(weights: dict[str, float], size: int) -> dict[str, int]:
    """Largest-remainder rounding: counts sum to `size` exactly."""
    total = sum(weights.values())
    exact = {name: size * w / total for name, w in weights.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)
    for name in by_remainder[: size - sum(counts.values())]:
        counts[name] += 1
    return counts


def _split(rows: list[dict], fraction: float, seed: str) -> tuple[list[dict], list[dict]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_heldout = math.ceil(len(rows) * fraction) if fraction > 0 and len(rows) > 1 else 0
    heldout = [rows[i] for i in order[:n_heldout]]
    train = [rows[i] for i in sorted(order[n_heldout:])]
    return train, heldout


# ---------------------------------------------------------------- reading sources


def _load(name: str, src: SourceSpec, spec_dir: Path | None) -> Source:
    if src.path and src.path.startswith("toy:"):
        from harness.toy import toy_pairs

        rows = [(i + 1, row) for i, row in enumerate(toy_pairs(src.path.removeprefix("toy:")))]
        where = src.path
    elif src.path:
        path = resolve_path(src.path, spec_dir)
        if path is None:
            raise DataError(f"source '{name}': no such file: {src.path}")
        rows, where = _read_jsonl(path), str(path)
    else:
        rows, where = _read_hub(src), f"hf:{src.hf}[{src.split}]"
    if not rows:
        raise DataError(f"{where}: source '{name}' holds no pairs")
    pairs, kinds = [], set()
    for line, row in rows:
        pair, kind = _check_row(row, where, line)
        pairs.append(pair)
        kinds.add(kind)
    if len(kinds) > 1:
        raise DataError(f"{where}: rows mix conversational and plain-text pairs; use one kind per file")
    kept = [p for p in pairs if p["chosen"] != p["rejected"]]
    return Source(name, kept, [], dropped_identical=len(pairs) - len(kept), kind=kinds.pop())


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    return rows


def _read_hub(src: SourceSpec) -> list[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(src.hf, src.name, split=src.split)
    except Exception as exc:  # offline, unknown id or split: all end the same way for the user
        raise DataError(f"hf:{src.hf}: cannot load split '{src.split}': {exc}") from None
    return [(i + 1, row) for i, row in enumerate(ds)]


def _check_row(row: Any, where: str, line: int) -> tuple[dict, str]:
    """Validate one pair; return it with an explicit prompt, and its kind."""
    at = f"{where}:{line}"
    if not isinstance(row, dict):
        raise DataError(f"{at}: a pair is a JSON object with chosen/rejected (and usually prompt)")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise DataError(f"{at}: missing field '{key}' (pairs need chosen and rejected, and usually prompt)")
    fields = ("prompt", "chosen", "rejected") if "prompt" in row else ("chosen", "rejected")
    kinds = {key: _kind(row[key], f"{at}: field '{key}'") for key in fields}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{k} is {v}" for k, v in kinds.items())
        raise DataError(f"{at}: fields must all be strings or all message lists ({listing})")
    kind = kinds["chosen"]
    pair = {key: row[key] for key in fields}
    if "prompt" not in pair:
        from harness.training import extract_prompt

        pair = extract_prompt(pair)
        if not pair["prompt"]:
            raise DataError(f"{at}: implicit-prompt pair: chosen and rejected share no prompt")
    return pair, kind


def _kind(value: Any, at: str) -> str:
    if isinstance(value, str):
        return "plain-text"
    if isinstance(value, list) and value:
        for i, msg in enumerate(value):
            if not (isinstance(msg, dict) and isinstance(msg.get("content"), str) and msg.get("role") in ROLES):
                raise DataError(f"{at}, message {i}: expected {{'role': one of {list(ROLES)}, 'content': str}}")
        return "conversational"
    raise DataError(f"{at}: expected a string or a non-empty list of messages, got {type(value).__name__}")
