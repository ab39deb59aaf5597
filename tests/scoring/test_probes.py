"""Probes that never cry wolf: ties, missing held-out pairs, per-source gaps, empty base answers."""

from __future__ import annotations

import math

import pytest

from harness.scoring import lm, probes
from harness.toy import toy_pairs

CUT = lm.Truncation()


def test_ties_count_half() -> None:
    assert probes.accuracy([1.0, -1.0, 0.0, 0.0]) == 0.5
    assert probes.accuracy([0.0] * 5) == 0.5
    assert probes.accuracy([probes.TIE_NATS / 2, 2.0]) == 0.75, "below the tie tolerance is numerical noise"
    assert math.isnan(probes.accuracy([]))


def test_an_unchanged_model_is_indifferent(toy_model) -> None:
    """Policy = reference: every implicit reward is 0, so accuracies are 0.5, not 0 (no false shortcut)."""
    model, tokenizer = toy_model
    swap = [p for p in toy_pairs("shortcut")[:8]]
    assert probes.swap_accuracy(model, model, tokenizer, swap, CUT) == 0.5
    pairs = probes.Labelled(
        train={"identity": toy_pairs("identity")[:6]}, heldout={"identity": toy_pairs("identity")[6:10]}, shares={}
    )
    metrics, notes, _ = probes.overfit(model, model, tokenizer, pairs, ["A neutral text."], CUT)
    assert metrics["overfit.train_acc"] == metrics["overfit.heldout_acc"] == 0.5
    assert metrics["overfit.acc_gap"] == 0.0 and metrics["overfit.kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert notes == []


def test_no_held_out_pairs_leaves_held_out_metrics_absent_with_a_note(toy_model) -> None:
    model, tokenizer = toy_model
    pairs = probes.Labelled(train={"identity": toy_pairs("identity")[:4]}, heldout={}, shares={"identity": 1.0})
    metrics, notes, detail = probes.overfit(model, model, tokenizer, pairs, ["A neutral text."], CUT)
    assert set(metrics) == {"overfit.train_acc", "overfit.kl_ref"}
    assert len(notes) == 1 and "no held-out pairs" in notes[0] and "data.eval_fraction" in notes[0]
    assert detail == {}


def fake_ratios(monkeypatch, accuracies: dict[str, float]) -> None:
    """log_ratios answering, per list of pairs, margins whose accuracy is the pairs' 'acc' field."""

    def ratios(model, ref, tokenizer, pairs, cut, cache=None):
        wins = [1.0 if p["acc"] > i / len(pairs) else -1.0 for i, p in enumerate(pairs)]
        return probes.Ratios(chosen=wins, rejected=[0.0] * len(pairs))

    monkeypatch.setattr(probes, "log_ratios", ratios)
    monkeypatch.setattr(lm, "kl_per_token", lambda *a, **k: 0.1)


def test_acc_gap_compares_each_source_with_itself_weighted_by_share(monkeypatch) -> None:
    """Memorised source b (gap 1.0) is 10% of the mix: the gap is 0.1, however many b pairs were held out."""
    fake_ratios(monkeypatch, {})
    pairs = probes.Labelled(
        train={"a": [{"acc": 1.0}] * 90, "b": [{"acc": 1.0}] * 10},
        heldout={"a": [{"acc": 1.0}] * 5, "b": [{"acc": 0.0}] * 50},  # pooled, b would dominate: gap 0.9
        shares={"a": 0.9, "b": 0.1},
    )
    metrics, notes, detail = probes.overfit(None, None, None, pairs, ["t"], CUT)
    assert metrics["overfit.acc_gap"] == pytest.approx(0.1)
    assert metrics["overfit.train_acc"] == pytest.approx(1.0) and metrics["overfit.heldout_acc"] == pytest.approx(0.9)
    assert detail["b"] == {"weight": 0.1, "train_pairs": 10, "heldout_pairs": 50, "train_acc": 1.0, "heldout_acc": 0.0}
    assert notes == []


def test_a_source_without_held_out_pairs_is_named(monkeypatch) -> None:
    fake_ratios(monkeypatch, {})
    pairs = probes.Labelled(
        train={"a": [{"acc": 1.0}] * 8, "tiny": [{"acc": 1.0}]}, heldout={"a": [{"acc": 1.0}] * 2}, shares={}
    )
    metrics, notes, _ = probes.overfit(None, None, None, pairs, ["t"], CUT)
    assert metrics["overfit.acc_gap"] == 0.0
    assert any("tiny" in n for n in notes)


def test_pairs_are_grouped_by_source_names_or_their_source_key() -> None:
    pairs = [{"p": 1}, {"p": 2, "_source": "x"}, {"p": 3}]
    assert probes.by_source(pairs, ["a", "b", "a"]) == {"a": [{"p": 1}, {"p": 3}], "b": [{"p": 2, "_source": "x"}]}
    assert probes.by_source(pairs) == {"all": [{"p": 1}, {"p": 3}], "x": [{"p": 2, "_source": "x"}]}


def test_training_sample_keeps_each_sources_share() -> None:
    sample = probes._sample({"a": list(range(900)), "b": list(range(100))}, cap=200)
    assert {k: len(v) for k, v in sample.items()} == {"a": 180, "b": 20}


def test_length_ratio_is_defined_when_the_base_says_nothing() -> None:
    assert probes.length_ratio(0.0, 0.0) == 1.0
    assert probes.length_ratio(8.0, 0.0) == 9.0
    assert probes.length_ratio(10.0, 10.0) == 1.0


def test_scorecard_of_an_unchanged_model_against_a_silent_base(toy_model) -> None:
    """Every probe metric present where it can be measured, absent with a note where it cannot."""
    from support import ROOT

    from harness import scoring
    from harness.spec import EvalsSpec

    model, tokenizer = toy_model
    evals = EvalsSpec(
        identity=str(ROOT / "evals/identity/athene.yaml"),
        probes=["overfit", "shortcut"],
        probe_suite=str(ROOT / "evals/probes/toy.yaml"),
    )
    base = scoring.Scorecard({scoring.BASE_ANSWER_TOKENS: 0.0, "identity.logprob_margin": -1.0})
    ctx = scoring.Context(evals, train_pairs=toy_pairs("identity")[:4], base=base, train={"max_length": 256})
    said: list[str] = []
    card = scoring.score(model, tokenizer, ctx, reference=model, status=said.append)
    assert said == ["scoring: identity tests", "scoring: overfit and shortcut probes"]  # a family at a time
    m = card.metrics
    assert m["shortcut.swap_acc"] == 0.5
    assert m["shortcut.length_ratio"] == pytest.approx(m[scoring.BASE_ANSWER_TOKENS] + 1.0)
    assert m["identity.logprob_margin_delta"] == pytest.approx(m["identity.logprob_margin"] + 1.0)
    assert "overfit.heldout_acc" not in m and "overfit.acc_gap" not in m and m["overfit.train_acc"] == 0.5
    assert any("no held-out pairs" in n for n in card.notes)
    assert any("carry no source" in n for n in card.notes)
    assert card.artifacts[scoring.NOTES_ARTIFACT] == card.notes
    used = card.artifacts[scoring.MEMORY_ARTIFACT]
    assert 0 < used["largest_logit_tensor_bytes"] <= used["planned_logit_bytes"] <= used["budget"]["logit_bytes"]
    assert len(card.items["identity.logprob_margin"]) == len(card.artifacts["identity_generations.json"])
    assert scoring.Scorecard.from_json(card.to_json()).notes == card.notes
