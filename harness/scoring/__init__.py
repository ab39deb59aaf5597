"""The scorecard: every checkpoint scored the same way, in sweeps and in `harness eval`.

Families (see harness.metrics): identity.* (identity suite), bench.* (lm-eval tasks),
overfit.* and shortcut.* (probes against the reference model). The base model gets a card
too, once per study: retention, length ratios and margin changes of trials are relative to it.
A metric that cannot be measured is left out and a note says why (Scorecard.notes); the card also
records the memory its scoring planned and used (scoring_memory.json).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spec import EvalsSpec, resolve_path

BASE_ANSWER_TOKENS = "shortcut.answer_tokens"  # mean greedy answer length: the base for length_ratio
NOTES_ARTIFACT = "scorecard_notes.json"
MEMORY_ARTIFACT = "scoring_memory.json"


@dataclass
class Scorecard:
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)  # <name>.json -> JSON-able payload
    items: dict[str, list[float]] = field(default_factory=dict)  # per-item scores, for bootstrap intervals
    notes: list[str] = field(default_factory=list)  # what was not measured, or measured with a caveat, and why

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "items": self.items, "artifacts": self.artifacts, "notes": self.notes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scorecard:
        return cls(data["metrics"], data.get("artifacts", {}), data.get("items", {}), data.get("notes", []))


@dataclass
class Context:
    """What scoring needs besides the model: the suites, the trial's pairs and settings, the base card.

    Pairs are labelled with their source by `train_sources` / `heldout_sources` (one name per pair),
    else by a pair's `_source` key; unlabelled pairs form one group, and the overfit probe says so."""

    evals: EvalsSpec
    spec_dir: Path | None = None
    seed: int = 0
    train_pairs: list[dict] = field(default_factory=list)
    heldout_pairs: list[dict] = field(default_factory=list)
    base: Scorecard | None = None
    train: dict[str, Any] | None = None  # the trial's resolved train settings: max_length, truncation_mode
    train_sources: list[str] | None = None
    heldout_sources: list[str] | None = None
    shares: dict[str, float] | None = None  # the trial's mix shares, which weight the per-source gaps
    ref_cache: Any = None  # the study's reference log-probs (RefCache.for_scoring): probes skip pairs it holds


def score(
    model: Any, tokenizer: Any, ctx: Context, reference: Any = None, status: Callable[[str], None] | None = None
) -> Scorecard:
    """Score a trained model; `reference` is the model DPO started from (None scores the base itself).
    status(text) says which family runs: each is minutes on a real model."""
    from harness.scoring import memory

    card = Scorecard()
    evals = ctx.evals
    say = status or (lambda text: None)
    with memory.recording() as record:
        if evals.identity:
            say("scoring: identity tests")
            _identity(model, tokenizer, ctx, card)
        if evals.benchmarks:
            say(f"scoring: benchmarks ({', '.join(Path(task).stem for task, _ in evals.benchmark_entries())})")
            _bench(model, tokenizer, ctx, card)
        if evals.probes:
            say(f"scoring: {' and '.join(evals.probes)} probes" if reference is not None else "scoring: answer lengths")
            _probes(model, tokenizer, ctx, card, reference)
    card.artifacts[MEMORY_ARTIFACT] = record.to_json()
    if card.notes:
        card.artifacts[NOTES_ARTIFACT] = card.notes
    return card


def _identity(model: Any, tokenizer: Any, ctx: Context, card: Scorecard) -> None:
    from harness.scoring import identity, lm, suites

    suite = suites.load_identity(_path(ctx.evals.identity, ctx.spec_dir))
    metrics, generations = identity.score(model, tokenizer, suite, ctx.seed, lm.truncation(ctx.train))
    card.metrics |= metrics
    card.artifacts["identity_generations.json"] = generations
    card.items["identity.hit_rate"] = [float(g["hit"]) for g in generations]
    card.items["identity.logprob_margin"] = [float(g["logprob_margin"]) for g in generations]
    base = ctx.base.metrics.get("identity.logprob_margin") if ctx.base else None
    if base is not None:  # the change against the base model: what DPO did to the margin
        card.metrics["identity.logprob_margin_delta"] = metrics["identity.logprob_margin"] - base


def _bench(model: Any, tokenizer: Any, ctx: Context, card: Scorecard) -> None:
    from harness.scoring import bench

    result = bench.score(model, tokenizer, ctx.evals.benchmark_entries(), ctx.spec_dir, seed=ctx.seed)
    card.metrics |= result.metrics
    card.items |= {f"bench.{task}": values for task, values in result.items.items()}
    if ctx.base is None:
        return
    kept, notes = bench.retention(result.metrics, ctx.base.metrics, result.tasks, result.higher_is_better)
    card.notes += notes
    if kept is not None:
        card.metrics["bench.retention"] = kept


def _probes(model: Any, tokenizer: Any, ctx: Context, card: Scorecard, reference: Any) -> None:
    from harness.scoring import lm, probes, suites

    suite, texts, swap_pairs = suites.load_probes(_path(ctx.evals.probe_suite, ctx.spec_dir))
    cut = lm.truncation(ctx.train)
    prompts = [p["prompt"] for p in swap_pairs]
    tokens, answers = probes.answer_lengths(model, tokenizer, prompts, suite.max_new_tokens)
    card.artifacts["probe_answers.json"] = [{"prompt": p, "answer": a} for p, a in zip(prompts, answers, strict=True)]
    card.metrics[BASE_ANSWER_TOKENS] = tokens
    if reference is None:  # the base model: only the length its answers have
        return
    if "overfit" in ctx.evals.probes:
        labelled = probes.Labelled(
            train=probes.by_source(ctx.train_pairs, ctx.train_sources),
            heldout=probes.by_source(ctx.heldout_pairs, ctx.heldout_sources),
            shares=dict(ctx.shares or {}),
        )
        if ctx.train_sources is None and not any("_source" in p for p in ctx.train_pairs):
            card.notes.append(
                "overfit: the pairs carry no source, so acc_gap pools every source's pairs (not weighted by share)"
            )
        metrics, notes, detail = probes.overfit(model, reference, tokenizer, labelled, texts, cut, ctx.ref_cache)
        card.metrics |= metrics
        card.notes += notes
        if detail:
            card.artifacts["overfit_by_source.json"] = detail
    if "shortcut" in ctx.evals.probes:
        swap = probes.swap_accuracy(model, reference, tokenizer, swap_pairs, cut, ctx.ref_cache)
        card.metrics["shortcut.swap_acc"] = swap
        base_tokens = ctx.base.metrics.get(BASE_ANSWER_TOKENS) if ctx.base else None
        if base_tokens is not None:
            card.metrics["shortcut.length_ratio"] = probes.length_ratio(tokens, base_tokens)


@contextlib.contextmanager
def reference_model(trained: Any, base_path: str, load: Any) -> Iterator[Any]:
    """The model DPO started from: the adapter switched off for LoRA, else the base loaded again."""
    if hasattr(trained, "disable_adapter"):
        yield _AdapterOff(trained)
    else:
        model, _ = load(base_path)
        try:
            yield model
        finally:
            del model


class _AdapterOff:
    """A PEFT model seen with its adapter disabled: the frozen base, without a second copy in memory."""

    def __init__(self, model: Any):
        self.model = model
        self.device = model.device

    def scoring_context(self) -> Any:
        """What harness.scoring.lm runs this model's backbone and head in."""
        return self.model.disable_adapter()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def eval(self) -> _AdapterOff:
        self.model.eval()
        return self


def check_evals(evals: EvalsSpec, spec_dir: Path | None) -> None:
    """Read and validate every eval suite the spec names (raises SpecError)."""
    from harness.scoring import suites

    if evals.identity:
        suites.load_identity(_path(evals.identity, spec_dir))
    if evals.benchmarks:
        from harness.scoring import bench

        bench.check([task for task, _ in evals.benchmark_entries()], spec_dir)
    if evals.probes:
        suites.load_probes(_path(evals.probe_suite, spec_dir))


def _path(value: str, spec_dir: Path | None) -> Path:
    path = resolve_path(value, spec_dir)
    if path is None:
        from harness.spec import SpecError

        raise SpecError(
            value, [("", None, "no such file (relative paths: tried from here, the spec's folder, the harness's)")]
        )
    return path
