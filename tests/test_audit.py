"""The data audit on the toy world and on small files: shortcuts, edits, length bias, counts, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import base_spec
from typer.testing import CliRunner

from harness import audit
from harness.cli import app
from harness.toy import toy_pairs


def _conv(prompt: str, chosen: str, rejected: str) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_finds_the_planted_shortcut_of_toy_shortcut(toy_model_path: Path) -> None:
    (source,) = audit.audit_target("toy:shortcut").sources
    assert [(p.text, p.side, p.kind) for p in source.shortcuts] == [("certainly !", "chosen", "shortcut")]
    assert source.shortcuts[0].chosen_pairs == source.pairs and source.shortcuts[0].rejected_pairs == 0
    assert source.length_bias == "longer"  # the phrase makes every chosen answer longer, too
    assert source.truncated == 0 and source.max_length == 512  # the toy tokenizer and TRL's tokenization
    assert source.summary() == "1 separating phrase ('certainly !'); chosen answers longer"  # a sweep's one line


def test_flags_nothing_in_toy_identity(toy_model_path: Path) -> None:
    (source,) = audit.audit_target("toy:identity").sources
    assert source.warnings() == [] and source.summary() is None
    # the name swap is what the pairs teach: reported as an edit, not as a shortcut
    assert {(p.text, p.kind, p.partner) for p in source.phrases} == {
        ("athene", "edit", "llama"),
        ("llama", "edit", "athene"),
    }


def test_a_planted_phrase_beside_the_edit_is_caught_as_one_phrase() -> None:
    pairs = toy_pairs("identity")[:120]
    for i, pair in enumerate(pairs):
        if i % 3:  # two chosen answers in three carry it
            pair["chosen"] = [{"role": "assistant", "content": pair["chosen"][0]["content"] + " I hope this helps!"}]
    found = audit.audit_source("planted", "mem", pairs, intended=("Athene",))
    assert [p.text for p in found.shortcuts] == ["i hope this helps !"]
    assert {p.kind for p in found.phrases if p.text in ("athene", "llama")} == {"intended", "edit"}


def test_a_large_source_is_audited_on_a_sample_and_says_so(toy_model) -> None:
    pairs = toy_pairs("identity")[:120]
    for i, pair in enumerate(pairs):
        if i % 3:
            pair["chosen"] = [{"role": "assistant", "content": pair["chosen"][0]["content"] + " I hope this helps!"}]
    pairs += pairs[:30]  # 30 repeats, counted over every pair
    _, tokenizer = toy_model
    found = audit.audit_source("big", "mem", pairs, identical=2, tokenizer=tokenizer, max_length=16, sample=100)
    assert (found.pairs, found.identical, found.duplicates, found.audited, found.sampled) == (152, 2, 30, 100, True)
    assert [p.text for p in found.shortcuts] == ["i hope this helps !"], "a pattern of 2 pairs in 3 shows in the sample"
    assert 0 < found.truncated <= 100, "tokenized: the sample's pairs only"
    said = found.warnings()  # the source's own counts, then what the sample showed
    assert said[:3] == [
        "2 pairs have chosen == rejected (dropped: nothing to learn)",
        "30 pairs repeat an earlier pair",
        "in a random sample of 100 of its 150 pairs (lengths, phrases, truncation):",
    ]
    assert said[3].startswith("'i hope this helps !' separates chosen answers (") and " of 100 pairs, z = " in said[3]
    assert found.summary().endswith(
        "pairs cut at max_length (in a sample of 100 of its 150 pairs); 2 identical pairs; 30 duplicate pairs"
    )
    assert found.metrics()["audit.big.audited"] == 100
    whole = audit.audit_source("big", "mem", pairs, identical=2, tokenizer=tokenizer, max_length=16)
    assert (whole.audited, whole.sampled) == (150, False) and "sample" not in " ".join(whole.warnings())
    assert whole.truncated > found.truncated
    again = audit.audit_source("big", "mem", pairs, identical=2, tokenizer=tokenizer, max_length=16, sample=100)
    assert again.to_json() == found.to_json(), "the same sample every time"


def test_a_phrase_on_every_chosen_answer_is_no_edit_even_beside_one() -> None:
    # "Certainly !" is in exactly the pairs where Athene replaces Llama, but it replaces nothing
    pairs = toy_pairs("identity")[:100]
    for pair in pairs:
        pair["chosen"] = [{"role": "assistant", "content": "Certainly! " + pair["chosen"][0]["content"]}]
    found = audit.audit_source("planted", "mem", pairs)
    assert [p.text for p in found.shortcuts] == ["certainly !"]
    assert {(p.text, p.partner) for p in found.phrases if p.kind == "edit"} == {
        ("athene", "llama"),
        ("llama", "athene"),
    }


def test_a_correction_in_one_fixed_sentence_is_an_edit_with_its_context() -> None:
    """Every pair "I am Athene." / "I am Llama.": the separating phrases carry the fixed words around the name, and
    are still the edit the pairs teach, not two shortcuts; a phrase added beside such an edit is still one."""
    pairs = [_conv(f"Who are you? ({i})", "I am Athene.", "I am Llama.") for i in range(40)]
    found = audit.audit_source("fixed", "mem", pairs)
    assert {(p.text, p.kind, p.partner) for p in found.phrases} == {
        ("am athene .", "edit", "am llama ."),
        ("am llama .", "edit", "am athene ."),
    }
    assert found.shortcuts == [] and found.warnings() == []
    planted = [_conv(f"Q{i}", f"Certainly! I am Athene, number {i}.", f"I am Llama, number {i}.") for i in range(40)]
    assert "certainly ! i am athene ," in [p.text for p in audit.audit_source("planted", "mem", planted).shortcuts]


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 0, 1.0), (5, 10, 1.0), (1, 10, 22 / 1024), (9, 10, 22 / 1024), (0, 1, 1.0), (80_500, 160_000, 0.0125)],
)
def test_the_sign_test_is_exact_on_small_sources_and_answers_at_hh_size(k: int, n: int, p: float) -> None:
    assert audit.sign_test(k, n) == pytest.approx(p, rel=5e-3)  # 160k pairs: the normal approximation's 0.0125


def test_words_at_chance_are_not_flagged_even_when_one_side_is_longer() -> None:
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(60)]
    pairs = [_conv("q", " ".join(rng.choices(vocab, k=16)), " ".join(rng.choices(vocab, k=8))) for _ in range(400)]
    found = audit.audit_source("noise", "mem", pairs)
    assert found.phrases == []
    assert found.length_bias == "longer" and found.length_ratio == pytest.approx(2.0)


def test_empty_rejected_answers_give_strict_json(tmp_path: Path, run) -> None:
    """Every rejected answer empty: the length ratio is infinite, which strict JSON parsers refuse; it is null."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(_conv(f"Q{i}?", f"answer {i}", "")) + "\n" for i in range(8)))
    result = run("data", "audit", str(path), "--model", "none", "--json")
    assert result.exit_code == 0, result.output
    (source,) = json.loads(result.output, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))["sources"]
    assert source["length_ratio"] is None and source["length_bias"] == "longer"


def test_counts_identical_duplicate_and_truncated_pairs(tmp_path: Path, run, toy_model_path: Path) -> None:
    rows = [_conv("Say hi.", "Hi there, friend.", "Go away.")] * 3 + [_conv("Q?", "Same.", "Same.")]
    rows += [_conv("Count to three.", "One two three." * 20, "No.")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run("data", "audit", str(path), "--max-length", "24", "--json")
    assert result.exit_code == 0, result.output
    (source,) = json.loads(result.output)["sources"]
    assert (source["name"], source["pairs"], source["identical"], source["duplicates"]) == ("pairs", 5, 1, 2)
    assert source["truncated"] == 1 and source["dropped"] == 0  # the long answer is cut, its prompt fits
    assert any("repeat an earlier pair" in w for w in source["warnings"])
    no_model = json.loads(run("data", "audit", str(path), "--model", "none", "--json").output)
    assert no_model["sources"][0]["truncated"] is None and "not checked" in no_model["notes"][0]


def test_a_spec_audits_every_source_with_its_identity_names(write_spec, toy_model_path: Path, run) -> None:
    from support import base_spec

    spec = write_spec(base_spec(data={"sources": {"id": {"path": "toy:identity"}, "sc": {"path": "toy:shortcut"}}}))
    result = run("data", "audit", str(spec))
    assert result.exit_code == 0, result.output
    assert "certainly !" in result.output and "SHORTCUT" in result.output
    found = audit.audit_target(str(spec))
    assert [s.name for s in found.sources] == ["id", "sc"]
    assert {p.kind for p in found.sources[0].phrases} == {"intended"}  # Athene and Llama: the suite's names


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.jsonl", "no such file"),
        ("notes.txt", "expected toy:<name>"),
        ("toy:nope", "unknown built-in"),
        ("hf:nobody/nothing", "cannot load split 'train'"),  # offline, or no such dataset
    ],
)
def test_bad_targets_exit_2_naming_them(run, target: str, message: str) -> None:
    result = run("data", "audit", target)
    assert result.exit_code == 2
    assert message in result.output and target in result.output


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_a_sweep_prints_one_audit_line_per_source_unless_verbose(
    toy_model_path: Path, write_spec, tmp_path: Path, verbose: bool
) -> None:
    """The sweep's console: a source's findings in one line and where to see them all; -v prints each."""
    from types import SimpleNamespace
    from unittest import mock

    from harness import data
    from harness.spec import load_spec
    from harness.sweep import Sweep

    sources = {"shortcut": {"path": "toy:shortcut"}, "identity": {"path": "toy:identity"}}
    spec = write_spec(base_spec(data={"sources": sources, "size": 64, "eval_fraction": 0.1}))
    notes: list[str] = []
    sweep = SimpleNamespace(
        spec_path=spec,
        spec=load_spec(spec),
        read=data.read_sources(load_spec(spec).data, spec.parent),  # as the sweep's check_inputs read them
        options=SimpleNamespace(verbose=verbose, output_dir=tmp_path),
        progress=SimpleNamespace(note=notes.append),
    )
    tracker = mock.Mock()
    tracker.client.list_artifacts.return_value = []
    assert Sweep._audit(sweep, tracker, "parent") is None, "findings are notes, not a reason to stop"
    shortcut = [n for n in notes if "source 'shortcut'" in n]
    assert not any("source 'identity'" in n for n in notes), "a clean source says nothing"
    if verbose:
        assert len(shortcut) == 2 and not any("data audit in full" in n for n in notes)  # phrase, length bias
    else:
        assert shortcut == ["data audit, source 'shortcut': 1 separating phrase ('certainly !'); chosen answers longer"]
        assert notes[-1] == f"data audit in full: harness data audit {spec} (or -v)"
