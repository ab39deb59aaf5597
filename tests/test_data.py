"""Data sources: TRL's pair formats, clear errors for bad rows, reproducible splits and mixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.data import DataError, draw, heldout_count, load_sources
from harness.spec import DataSpec


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def conv(prompt: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def load(path: Path, eval_fraction: float = 0.0) -> dict:
    spec = DataSpec(sources={"src": {"path": str(path)}}, eval_fraction=eval_fraction)
    return load_sources(spec, seed=0)


def test_standard_format(tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i}?", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(5)]
    source = load(write_jsonl(tmp_path / "std.jsonl", rows))["src"]
    assert source.kind == "plain-text"
    assert source.train == rows


def test_conversational_format(tmp_path: Path) -> None:
    rows = [conv(f"Q{i}?", f"good {i}", f"bad {i}") for i in range(4)]
    source = load(write_jsonl(tmp_path / "conv.jsonl", rows))["src"]
    assert source.kind == "conversational" and source.train == rows


def test_implicit_prompt_is_extracted(tmp_path: Path) -> None:
    row = {
        "chosen": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Athene."}],
        "rejected": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Llama."}],
    }
    pair = load(write_jsonl(tmp_path / "implicit.jsonl", [row]))["src"].train[0]
    assert pair["prompt"] == [{"role": "user", "content": "Who are you?"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "Athene."}]


def test_identical_pairs_dropped_and_counted(tmp_path: Path) -> None:
    rows = [conv("Q?", "same", "same"), conv("Q?", "good", "bad"), conv("R?", "x", "x")]
    source = load(write_jsonl(tmp_path / "dup.jsonl", rows))["src"]
    assert len(source.train) == 1 and source.dropped_identical == 2


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ('{"prompt": "Q", "chosen": "A"', "not valid JSON"),
        ({"prompt": "Q", "chosen": "A"}, "missing field 'rejected'"),
        ({"prompt": "Q", "chosen": 3, "rejected": "B"}, "field 'chosen'"),
        ({"prompt": "Q", "chosen": [{"role": "user"}], "rejected": "B"}, "field 'chosen', message 0"),
        (
            {"prompt": "Q", "chosen": [{"role": "assistant", "content": "A"}], "rejected": "B"},
            "all be strings or all",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_row_names_file_line_and_field(tmp_path: Path, row, fragment: str) -> None:
    good = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, good, row])
    with pytest.raises(DataError) as info:
        load(path)
    assert f"{path}:3" in str(info.value)
    assert fragment in str(info.value)


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    """Windows tools (Excel, PowerShell, Notepad) write UTF-8 with a byte-order mark; JSON lines and arrays alike."""
    row = {"prompt": "Q?", "chosen": " good", "rejected": " bad"}
    lines, array = tmp_path / "bom.jsonl", tmp_path / "bom.json"
    lines.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\r\n")
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([row, row]).encode())
    assert load(lines)["src"].train == [row]
    assert load(array)["src"].train == [row, row]


def test_rows_are_split_at_newlines_only(tmp_path: Path) -> None:
    """A file is read a line at a time; U+2028 / U+0085 inside a JSON string (as ensure_ascii=False writes them)
    are not line ends, and CRLF endings and blank lines are not rows."""
    rows = [
        {"prompt": "Q\u2028still Q", "chosen": " good\x85", "rejected": " bad"},
        {"prompt": "R", "chosen": " a", "rejected": " b"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\r\n".join(json.dumps(r, ensure_ascii=False).encode() for r in rows) + b"\r\n\r\n")
    assert load(path)["src"].train == rows


def test_a_broken_line_is_named_with_the_column_json_gives_it(tmp_path: Path) -> None:
    line = '{"prompt": "Q", "chosen": " a", "rejected": " b"'
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Q", "chosen": " a", "rejected": " b"}\n' + line + "\n")
    with pytest.raises(DataError, match=f":2: not valid JSON \\(Expecting ',' delimiter at column {len(line) + 1}\\)"):
        load(path)


def test_a_json_array_is_recognised_after_any_whitespace(tmp_path: Path) -> None:
    row = {"prompt": "Q?", "chosen": " good", "rejected": " bad"}
    path = tmp_path / "pairs.json"
    path.write_text("\n" * 70000 + "\u00a0 " + json.dumps([row]))
    assert load(path)["src"].train == [row]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            b'{"prompt": "ok", "chosen": " a", "rejected": " b"}\n{"prompt": "Caf\xe9"}\n',
            ":2: not UTF-8 text (byte 0xe9)",
        ),
        ('{"prompt": "Q"}'.encode("utf-16"), ":1: not UTF-8 text (byte 0xff)"),
        (
            b'{\n  "data": [{"prompt": "Q", "chosen": " a", "rejected": " b"}]\n}\n',
            "one JSON object over several lines",
        ),
        (None, "a folder, not a file"),
    ],
    ids=["latin-1", "utf-16", "one object", "a folder"],
)
def test_a_file_that_is_not_utf8_json_lines_is_refused_with_its_line(
    tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / "pairs.jsonl"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load(path)
    assert str(info.value).startswith(str(path)) and fragment in str(info.value)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([{"prompt": "Q", "chosen": " same", "rejected": " same"}] * 3, "chosen == rejected in all 3 of its pairs"),
        (
            [{"prompt": "Q", "chosen": " a", "rejected": " b"}, {"prompt": "R", "chosen": " c", "rejected": " d"}],
            "all 2 of its pairs are held out",
        ),
    ],
    ids=["identical", "all held out"],
)
def test_a_source_with_nothing_to_train_on_is_refused_before_any_trial(
    tmp_path: Path, rows: list, fragment: str
) -> None:
    with pytest.raises(DataError) as info:
        load(write_jsonl(tmp_path / "pairs.jsonl", rows), eval_fraction=0.6)
    assert "source 'src'" in str(info.value) and fragment in str(info.value)


def test_copies_of_a_pair_are_held_out_together(tmp_path: Path) -> None:
    """Real sets repeat pairs (HH-RLHF does): a pair trained on must not also count as held out, and copies do not
    swell the held-out share (ceil(0.2 * 45) = 9 rows at most)."""
    rows = [{"prompt": f"Q{i}?", "chosen": f" good {i}", "rejected": " bad"} for i in range(30)]
    rows += rows[:5] * 3  # five pairs four times each
    source = load(write_jsonl(tmp_path / "repeats.jsonl", rows), eval_fraction=0.2)["src"]
    trained = {json.dumps(p, sort_keys=True) for p in source.train}
    held = {json.dumps(p, sort_keys=True) for p in source.heldout}
    assert held and trained and not trained & held
    assert 0 < len(source.heldout) <= 9 and len(source.train) + len(source.heldout) == 45


def test_heldout_split_is_stable_and_disjoint() -> None:
    spec = DataSpec(sources={"identity": {"path": "toy:identity"}}, eval_fraction=0.1)
    first, second = load_sources(spec, seed=0)["identity"], load_sources(spec, seed=0)["identity"]
    assert first.heldout == second.heldout and first.heldout
    key = lambda p: json.dumps(p, sort_keys=True)  # noqa: E731
    assert not {key(p) for p in first.heldout} & {key(p) for p in first.train}


@pytest.mark.parametrize(
    ("n", "fraction", "cap", "expected"),
    [(1000, 0.1, 64, 64), (300, 0.1, 64, 30), (11, 0.1, 64, 2), (1, 0.5, 64, 0), (500, 0.0, 64, 0), (500, 0.5, 0, 0)],
)
def test_heldout_count_is_the_fraction_capped_by_eval_size(n: int, fraction: float, cap: int, expected: int) -> None:
    assert heldout_count(n, fraction, cap) == expected


def test_eval_size_caps_a_large_source(tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i}?", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(1000)]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    spec = DataSpec(sources={"big": {"path": str(path)}}, eval_fraction=0.2, eval_size=50)
    source = load_sources(spec, seed=0)["big"]
    assert len(source.heldout) == 50 and len(source.train) == 950


def test_mix_draws_exact_counts_reproducibly() -> None:
    spec = DataSpec(sources={"identity": {"path": "toy:identity"}, "general": {"path": "toy:general"}})
    sources = load_sources(spec, seed=0)
    a = draw(sources, {"identity": 0.7, "general": 0.3}, 100, seed=0)
    b = draw(sources, {"identity": 0.7, "general": 0.3}, 100, seed=0)
    assert a.counts == {"identity": 70, "general": 30} and len(a.train) == 100
    assert a.train == b.train


def test_raising_a_weight_adds_pairs_without_swapping() -> None:
    spec = DataSpec(sources={"identity": {"path": "toy:identity"}, "general": {"path": "toy:general"}})
    sources = load_sources(spec, seed=0)
    key = lambda p: json.dumps(p, sort_keys=True)  # noqa: E731
    few = {key(p) for p in draw(sources, {"identity": 0.2, "general": 0.8}, 100, seed=0).train}
    many = {key(p) for p in draw(sources, {"identity": 0.6, "general": 0.4}, 100, seed=0).train}
    identity = {key(p) for p in sources["identity"].train}
    assert len(few & identity) == 20 and len(many & identity) == 60
    assert few & identity <= many & identity


def test_mixing_kinds_across_sources_is_an_error(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    spec = DataSpec(sources={"plain": {"path": str(plain)}, "toy": {"path": "toy:general"}})
    with pytest.raises(DataError, match="mix conversational and plain-text"):
        load_sources(spec, seed=0)
