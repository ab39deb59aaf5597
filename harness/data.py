"""Preference data: load sources, hold out pairs per source, draw a trial's mix.

Rows are read from JSON lines, a JSON array, the toy world or the hub, and converted once by
harness.formats into a pair with an explicit prompt: TRL's standard format (strings) or its
conversational one (lists of {role, content} messages). Every source of a spec must share one
kind (strings or messages), since one training set cannot hold both.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from harness import formats
from harness.spec import DataSpec, SourceSpec, resolve_path


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
    formats: dict[str, int] = field(default_factory=dict)  # format read -> rows (auto-detection is per row)


@dataclass
class TrialData:
    """What one trial trains and evaluates on."""

    train: list[dict]
    heldout: list[dict]
    counts: dict[str, int] = field(default_factory=dict)
    dropped_identical: dict[str, int] = field(default_factory=dict)
    train_sources: list[str] = field(default_factory=list)  # the source of each training pair
    heldout_sources: list[str] = field(default_factory=list)  # the source of each held-out pair


def source_problem(path: str, spec_dir: Path | None) -> str | None:
    """A cheap check for the spec validator: does this source location exist?"""
    if path.startswith("toy:"):
        from harness.toy import TOY_SOURCES

        name = path.removeprefix("toy:")
        if name not in TOY_SOURCES:
            return f"unknown built-in source '{path}'. Available: {', '.join('toy:' + n for n in TOY_SOURCES)}"
        return None
    if not path.lower().endswith((".jsonl", ".json")):
        return f"expected toy:<name>, a .jsonl file or a .json array, got {path!r}"
    if resolve_path(path, spec_dir) is None:
        return f"no such file: {path}"
    return None


def load_sources(spec: DataSpec, seed: int, spec_dir: Path | None = None) -> dict[str, Source]:
    """Load and validate every source, then hold out pairs of each (the same split for every trial)."""
    return hold_out(read_sources(spec, spec_dir), spec, seed)


def read_sources(spec: DataSpec, spec_dir: Path | None = None) -> dict[str, Source]:
    """Every source read, converted and checked, nothing held out yet (what the data audit looks at)."""
    loaded = {name: _load(name, src, spec_dir) for name, src in spec.sources.items()}
    kinds = {name: src.kind for name, src in loaded.items()}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{n}: {k}" for n, k in kinds.items())
        raise DataError(f"sources mix conversational and plain-text pairs ({listing}); use one kind")
    for name, source in loaded.items():
        if not source.train:
            raise DataError(
                f"source '{name}': chosen == rejected in all {source.dropped_identical} of its pairs: nothing to learn"
            )
    return loaded


def hold_out(read: dict[str, Source], spec: DataSpec, seed: int) -> dict[str, Source]:
    """The sources of `read_sources` with each one's held-out pairs set apart (new Sources; `read` is unchanged)."""
    split = {}
    for name, source in read.items():
        n_heldout = heldout_count(len(source.train), spec.eval_fraction, spec.eval_size)
        train, heldout = _split(source.train, n_heldout, f"{seed}:{name}")
        if not train:
            raise DataError(
                f"source '{name}': all {len(heldout)} of its pairs are held out "
                "(data.eval_fraction / data.eval_size), none is left to train on"
            )
        split[name] = replace(source, train=train, heldout=heldout)
    return split


def load_source(name: str, src: SourceSpec, spec_dir: Path | None = None) -> Source:
    """One source, read and converted, nothing held out (identical pairs dropped and counted)."""
    return _load(name, src, spec_dir)


def read_rows(path: Path) -> list[tuple[int, Any]]:
    """(line, row) pairs of a JSON lines file or a JSON array; DataError naming the line that is not JSON."""
    return list(_read_file(path))


def draw(sources: dict[str, Source], weights: dict[str, float], size: int, seed: int) -> TrialData:
    """Draw `size` training pairs by mix weight, reproducibly.

    Each source is read along one seeded permutation, so a larger weight adds pairs and never
    swaps them: trials with the same mix train on the same pairs, and nearby mixes on nearby data.
    """
    if sum(weights.values()) <= 0:
        raise DataError(f"every mix weight is 0 in this trial ({weights}); nothing to draw")
    counts = _apportion(weights, size)
    drawn: list[tuple[str, dict]] = []
    for name, count in counts.items():
        pool = sources[name].train
        if count and not pool:
            raise DataError(f"source '{name}' has no training pairs left after holding out eval pairs")
        order = list(range(len(pool)))
        random.Random(f"{seed}:{name}:draw").shuffle(order)
        drawn += [(name, pool[order[i % len(pool)]]) for i in range(count)]  # cycles when asked for more
    random.Random(f"{seed}:mix").shuffle(drawn)
    heldout = [(name, pair) for name, s in sources.items() for pair in s.heldout]
    return TrialData(
        train=[pair for _, pair in drawn],
        heldout=[pair for _, pair in heldout],
        counts=counts,
        dropped_identical={name: s.dropped_identical for name, s in sources.items()},
        train_sources=[name for name, _ in drawn],
        heldout_sources=[name for name, _ in heldout],
    )


def _apportion(weights: dict[str, float], size: int) -> dict[str, int]:
    """Largest-remainder rounding: counts sum to `size` exactly."""
    total = sum(weights.values())
    exact = {name: size * w / total for name, w in weights.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)
    for name in by_remainder[: size - sum(counts.values())]:
        counts[name] += 1
    return counts


def heldout_count(n: int, fraction: float, cap: int) -> int:
    """Pairs held out of a source of n: min(ceil(fraction * n), cap), and never its only pair."""
    return min(math.ceil(n * fraction), cap) if fraction > 0 and n > 1 else 0


def _split(rows: list[dict], n_heldout: int, seed: str) -> tuple[list[dict], list[dict]]:
    """n_heldout rows held out, drawn in a seeded order, a pair with all its copies or not at all: a pair on both
    sides would count as held out what was trained on (real sets repeat pairs). Without copies, the first
    n_heldout of the order."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    keys = [pair_key(row) for row in rows]
    copies = Counter(keys)
    side: dict[bytes, bool] = {}  # pair -> held out
    for i in order:
        if keys[i] not in side:
            side[keys[i]] = copies[keys[i]] <= n_heldout
            n_heldout -= copies[keys[i]] if side[keys[i]] else 0
    held = [side[key] for key in keys]
    heldout = [rows[i] for i in order if held[i]]
    train = [row for row, h in zip(rows, held, strict=True) if not h]
    return train, heldout


def pair_key(row: dict) -> bytes:
    """A pair's identity in 16 bytes, a hash of its JSON (the JSON of every pair would double a source's memory)."""
    return hashlib.blake2b(json.dumps(row, sort_keys=True).encode(), digest_size=16).digest()


# ---------------------------------------------------------------- reading sources


def _load(name: str, src: SourceSpec, spec_dir: Path | None) -> Source:
    if src.path and src.path.startswith("toy:"):
        from harness.toy import toy_pairs

        rows: Iterable[tuple[int, Any]] = enumerate(toy_pairs(src.path.removeprefix("toy:")), start=1)
        where = src.path
    elif src.path:
        path = resolve_path(src.path, spec_dir)
        if path is None:
            raise DataError(f"source '{name}': no such file: {src.path}")
        rows, where = _read_file(path), str(path)
    else:
        rows, where = _read_hub(src), f"hf:{src.hf}[{src.split}]"
    pairs: list[dict] = []
    kinds: dict[str, int] = {}  # kind -> first line of that kind, to point at the odd one out
    read_as: dict[str, int] = {}
    for line, row in rows:
        try:
            pair, fmt = formats.convert(row, src.format)
        except formats.RowError as exc:
            declared = f" (declared format: {src.format})" if src.format != "auto" else ""
            raise DataError(f"{where}:{line}: {exc}{declared}") from None
        pairs.append(pair)
        kinds.setdefault(formats.kind(pair), line)
        read_as[fmt] = read_as.get(fmt, 0) + 1
    if not pairs:
        raise DataError(f"{where}: source '{name}' holds no pairs")
    if len(kinds) > 1:
        listing = ", ".join(f"{k} from line {line}" for k, line in kinds.items())
        raise DataError(f"{where}: rows mix conversational and plain-text pairs ({listing}); use one kind per file")
    kept = [p for p in pairs if p["chosen"] != p["rejected"]]
    kind = next(iter(kinds))
    return Source(name, kept, [], dropped_identical=len(pairs) - len(kept), kind=kind, formats=read_as)


def _read_file(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, row) pairs from JSON lines, a line at a time (a large file is never held whole beside the pairs
    it converts into), or from a JSON array (LLaMA-Factory's files are arrays)."""
    if _starts_array(path):
        yield from _read_array(path, read_text(path))
    else:
        yield from _read_jsonl(path)


def _starts_array(path: Path) -> bool:
    """Whether the file's first character after any whitespace (and a byte-order mark) is '['."""
    with _opened(path) as file:
        head = file.read(65536).removeprefix(codecs.BOM_UTF8)
        while head:
            text = head.decode("utf-8", errors="replace").lstrip()
            if text:
                return text.startswith("[")
            head = file.read(65536)
    return False


class UnreadableFile(DataError):
    """A path that is not a readable UTF-8 text file; `line`: where the first byte that is not UTF-8 is."""

    def __init__(self, path: Path, problem: str, line: int | None = None):
        self.problem, self.line = problem, line
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")


def read_text(path: Path, kind: str = ".jsonl or .json") -> str:
    """A data or spec file (`kind`) as text: UTF-8, a leading byte-order mark skipped (Windows tools write one);
    UnreadableFile naming the line of a byte that is not UTF-8, or a path that is not a readable file."""
    with _opened(path, kind) as file:
        data = file.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(path, _not_utf8(data[exc.start]), data[: exc.start].count(b"\n") + 1) from None


def _opened(path: Path, kind: str = ".jsonl or .json") -> BinaryIO:
    if path.is_dir():
        raise UnreadableFile(path, f"a folder, not a file (name a {kind} file)")
    try:
        return path.open("rb")
    except OSError as exc:
        raise UnreadableFile(path, f"cannot be read ({exc.strerror or exc})") from None


def _not_utf8(byte: int) -> str:
    return f"not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    first = True
    with _opened(path) as file:
        for line_no, raw in enumerate(file, start=1):  # split at b"\n" only: JSON strings may hold U+2028
            try:
                line = (raw.removeprefix(codecs.BOM_UTF8) if line_no == 1 else raw).removesuffix(b"\n").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UnreadableFile(path, _not_utf8(raw[exc.start]), line_no) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if first and _one_object(read_text(path)):  # an object over several lines fails on its first
                    raise DataError(
                        f"{path}: one JSON object over several lines; a data file holds JSON lines (a pair per "
                        "line) or a JSON array of pairs ([{...}, {...}])"
                    ) from None
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            first = False
            yield line_no, row


def _one_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _read_array(path: Path, text: str) -> list[tuple[int, Any]]:
    """A JSON array read element by element, so that each row keeps the line it starts on."""
    decoder, rows = json.JSONDecoder(), []
    pos, line, counted = text.index("[") + 1, 1, 0
    try:
        while True:
            pos = _skip_space(text, pos)
            if text.startswith("]", pos):
                break
            line, counted = line + text.count("\n", counted, pos), pos
            row, pos = decoder.raw_decode(text, pos)
            rows.append((line, row))
            pos = _skip_space(text, pos)
            if text.startswith(",", pos):
                pos += 1
            elif not text.startswith("]", pos):
                raise json.JSONDecodeError("expected ',' or ']' after a row", text, pos)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    return rows


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_hub(src: SourceSpec) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(src.hf, src.name, split=src.split)
    except Exception as exc:  # offline, unknown id or split: all end the same way for the user
        raise DataError(f"hf:{src.hf}: cannot load split '{src.split}': {exc}") from None
    return ((i + 1, row) for i, row in enumerate(ds))
