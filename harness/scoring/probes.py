"""Overfitting and shortcut probes: is the preference learned, or memorised, or a shortcut?

All of them compare the trained policy π with its reference πref (the model DPO started from); in a
sweep the reference's log-probs of a pair come from the study's cache once any trial has scored it.
Implicit rewards are reported in log-ratio units, r = log π(y|x) - log πref(y|x), i.e. TRL's
rewards divided by β, so they compare across trials with different β. Pairs are tokenized and
truncated as TRL trained on them (lm.encode_pair); pairs TRL drops (the prompt fills max_length)
are skipped with a note.

A probe never guesses: a metric it cannot compute (no held-out pairs) is absent, with a note.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.scoring import lm

if TYPE_CHECKING:
    from harness.refcache import RefCache

MAX_TRAIN_PAIRS = 256  # enough for a stable training accuracy; bounded cost per checkpoint
# Implicit-reward differences below this (nats) are numerical noise, not a preference: they count as ties.
TIE_NATS = 1e-4


@dataclass
class Ratios:
    """log π/πref of the chosen and of the rejected answer of each scored pair."""

    chosen: list[float] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)
    dropped: int = 0  # pairs TRL would not train on (prompt fills max_length)

    @property
    def margins(self) -> list[float]:
        return [c - r for c, r in zip(self.chosen, self.rejected, strict=True)]


def log_ratios(
    model: Any, ref: Any, tokenizer: Any, pairs: Sequence[Mapping], cut: lm.Truncation, cache: RefCache | None = None
) -> Ratios:
    encoded = lm.encode_pairs(tokenizer, pairs, cut)
    kept = [e for e in encoded if e is not None]
    if not kept:
        return Ratios(dropped=len(pairs))
    policy = lm.pair_logps(model, tokenizer, kept)
    reference = reference_logps(ref, tokenizer, kept, cache)
    chosen = [a - b for a, b in zip(policy[0], reference[0], strict=True)]
    rejected = [a - b for a, b in zip(policy[1], reference[1], strict=True)]
    return Ratios(chosen, rejected, len(pairs) - len(kept))


def reference_logps(
    ref: Any, tokenizer: Any, pairs: list[tuple[lm.Encoded, lm.Encoded]], cache: RefCache | None = None
) -> tuple[list[float], list[float]]:
    """The reference's summed log-probs of encoded pairs; with the study's cache, only the pairs no earlier
    trial scored go through the reference (every trial of a study probes the same held-out and swap pairs)."""
    if cache is None:
        return lm.pair_logps(ref, tokenizer, pairs)
    keys = [cache.key([c.start], c.ids, [r.start], r.ids) for c, r in pairs]
    try:
        return cache.fill(keys, lambda missing: lm.pair_logps(ref, tokenizer, [pairs[i] for i in missing]))
    except sqlite3.Error as exc:  # a full disk, a read-only file: scoring goes on without the cache
        logging.getLogger("harness.scoring").warning("the study's reference cache failed (%s); computing all", exc)
        return lm.pair_logps(ref, tokenizer, pairs)


def accuracy(margins: Sequence[float]) -> float:
    """Share of pairs whose chosen answer gets the larger implicit reward; a tie counts ½ (an unchanged
    model scores 0.5, not 0)."""
    wins = sum(1.0 if m > TIE_NATS else 0.5 if m >= -TIE_NATS else 0.0 for m in margins)
    return wins / len(margins) if margins else math.nan


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass
class Labelled:
    """Pairs grouped by the source they were drawn from, and the trial's share of each source."""

    train: dict[str, list[Mapping]]
    heldout: dict[str, list[Mapping]]
    shares: dict[str, float]


def by_source(
    pairs: Sequence[Mapping], sources: Sequence[str] | None = None, default: str = "all"
) -> dict[str, list[Mapping]]:
    """Group pairs by source: the names given (one per pair), else a pair's `_source` key, else `default`."""
    out: dict[str, list[Mapping]] = {}
    for i, pair in enumerate(pairs):
        name = sources[i] if sources is not None else pair.get("_source", default)
        out.setdefault(str(name), []).append(pair)
    return out


def overfit(
    model: Any,
    ref: Any,
    tokenizer: Any,
    pairs: Labelled,
    texts: list[str],
    cut: lm.Truncation,
    cache: RefCache | None = None,
) -> tuple[dict[str, float], list[str], dict[str, Any]]:
    """overfit.*: train vs held-out accuracy per source, likelihood displacement, drift from the reference.

    Returns (metrics, notes, per-source detail). acc_gap compares like with like: per source, training
    minus held-out accuracy, averaged with the trial's shares (a mix sweep would otherwise track the mix);
    train_acc and heldout_acc are the same share-weighted means, so acc_gap = train_acc - heldout_acc."""
    notes: list[str] = []
    train = _sample(pairs.train, MAX_TRAIN_PAIRS)
    scored_train = {s: log_ratios(model, ref, tokenizer, p, cut, cache) for s, p in train.items() if p}
    scored_held = {s: log_ratios(model, ref, tokenizer, p, cut, cache) for s, p in pairs.heldout.items() if p}
    scored_held = {s: r for s, r in scored_held.items() if r.chosen}
    dropped = sum(r.dropped for r in [*scored_train.values(), *scored_held.values()])
    if dropped:
        notes.append(f"overfit: {dropped} pairs skipped, their prompt fills max_length (TRL does not train on them)")
    detail: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    kl = lm.kl_per_token(model, ref, tokenizer, texts, cut)
    if math.isfinite(kl):
        metrics["overfit.kl_ref"] = kl
    train_margins = [m for r in scored_train.values() for m in r.margins]
    both = [s for s in scored_held if s in scored_train and scored_train[s].chosen]
    if not both:
        if train_margins:
            metrics["overfit.train_acc"] = accuracy(train_margins)
        notes.append(
            "overfit: no held-out pairs, so held-out accuracy, acc_gap and the likelihood-displacement "
            "metrics are not measured (set data.eval_fraction > 0)"
        )
        return metrics, notes, detail
    weights = _weights(both, pairs.shares, {s: len(scored_train[s].chosen) for s in both})
    for s in both:
        detail[s] = {
            "weight": weights[s],
            "train_pairs": len(scored_train[s].chosen),
            "heldout_pairs": len(scored_held[s].chosen),
            "train_acc": accuracy(scored_train[s].margins),
            "heldout_acc": accuracy(scored_held[s].margins),
        }
    unmatched = sorted(set(scored_train) ^ set(scored_held))
    if unmatched:
        notes.append(
            f"overfit: acc_gap leaves out source(s) {', '.join(unmatched)}: they lack training or held-out pairs"
        )
    held = [r for s, r in scored_held.items() if s in both]
    chosen = [c for r in held for c in r.chosen]
    rejected = [x for r in held for x in r.rejected]
    metrics |= {
        "overfit.train_acc": sum(weights[s] * detail[s]["train_acc"] for s in both),
        "overfit.heldout_acc": sum(weights[s] * detail[s]["heldout_acc"] for s in both),
        "overfit.heldout_logratio_margin": _mean([c - r for c, r in zip(chosen, rejected, strict=True)]),
        "overfit.chosen_logp_delta": _mean(chosen),
        "overfit.rejected_logp_delta": _mean(rejected),
        "overfit.both_down_rate": _mean([float(c < 0 and r < 0) for c, r in zip(chosen, rejected, strict=True)]),
    }
    metrics["overfit.acc_gap"] = metrics["overfit.train_acc"] - metrics["overfit.heldout_acc"]
    return metrics, notes, detail


def _sample(train: Mapping[str, list[Mapping]], cap: int) -> dict[str, list[Mapping]]:
    """At most `cap` training pairs, each source keeping its share of them."""
    total = sum(len(p) for p in train.values())
    if total <= cap:
        return {s: list(p) for s, p in train.items()}
    return {s: list(p[: max(1, round(cap * len(p) / total))]) for s, p in train.items() if p}


def _weights(sources: list[str], shares: Mapping[str, float], counts: Mapping[str, int]) -> dict[str, float]:
    """The trial's shares of these sources, normalised; training-pair counts when the shares are unknown."""
    raw = {s: float(shares.get(s, 0.0)) for s in sources} if shares else {}
    if not raw or sum(raw.values()) <= 0:
        raw = {s: float(counts[s]) for s in sources}
    total = sum(raw.values())
    return {s: w / total for s, w in raw.items()}


def swap_accuracy(
    model: Any, ref: Any, tokenizer: Any, swap_pairs: list[dict], cut: lm.Truncation, cache: RefCache | None = None
) -> float:
    """Implicit-reward accuracy when the spurious phrase sits on the rejected side: well below 0.5
    means the model rewards the phrase, not the content."""
    return accuracy(log_ratios(model, ref, tokenizer, swap_pairs, cut, cache).margins)


def answer_lengths(model: Any, tokenizer: Any, prompts: list, max_new_tokens: int) -> tuple[float, list[str]]:
    """Mean greedy answer length in tokens, and the answers."""
    answers = [g[0] for g in lm.generate(model, tokenizer, prompts, max_new_tokens)]
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    return (_mean([float(n) for n in lengths]) if lengths else 0.0), answers


def length_ratio(tokens: float, base_tokens: float) -> float:
    """shortcut.length_ratio: (answer tokens + 1) / (base answer tokens + 1), means over the probe prompts.

    The +1 (the end of the answer, counted as a token) keeps it defined, and meaningful, when the base
    model answers with nothing: 1 = same length, 9 = eight tokens where the base said nothing."""
    return (tokens + 1.0) / (base_tokens + 1.0)
