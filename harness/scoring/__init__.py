"""The scorecard: every checkpoint scored the same way, in sweeps and in `harness eval`.

Families (see harness.metrics): identity.* (identity suite), bench.* (lm-eval tasks),
overfit.* and shortcut.* (probes against the reference model). The base model gets a card
too, once per study: retention and length ratios of trials are relative to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spec import EvalsSpec, resolve_path

BASE_ANSWER_TOKENS = "shortcut.answer_tokens"  # mean greedy answer length: the base for length_ratio


@dataclass
class Scorecard:
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)  # <name>.json -> JSON-able payload
    items: dict[str, list[float]] = field(default_factory=dict)  # per-item scores, for bootstrap intervals

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "items": self.items, "artifacts": self.artifacts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scorecard:
        return cls(data["metrics"], data.get("artifacts", {}), data.get("items", {}))


@dataclass
class Context:
    """What scoring needs besides the model: the suites, the trial's pairs and the base card."""

    evals: EvalsSpec
    spec_dir: Path | None = None
    seed: int = 0
    train_pairs: list[dict] = field(default_factory=list)
    heldout_pairs: list[dict] = field(default_factory=list)
    base: Scorecard | None = None


def score(model: Any, tokenizer: Any, ctx: Context, reference: Any = None) -> Scorecard:
    """Score a trained model; `reference` is the model DPO started from (None scores the base itself)."""
    card = Scorecard()
    evals = ctx.evals
    if evals.identity:
        _identity(model, tokenizer, ctx, card)
    if evals.benchmarks:
        _bench(model, tokenizer, ctx, card)
    if evals.probes:
        _probes(model, tokenizer, ctx, card, reference)
    return card


def _identity(model: Any, tokenizer: Any, ctx: Context, card: Scorecard) -> None:
    from harness.scoring import identity, suites

    suite = suites.load_identity(_path(ctx.evals.identity, ctx.spec_dir))
    metrics, generations = identity.score(model, tokenizer, suite, ctx.seed)
    card.metrics |= metrics
    card.artifacts["identity_generations.json"] = generations
    card.items["identity.hit_rate"] = [float(g["hit"]) for g in generations]


def _bench(model: Any, tokenizer: Any, ctx: Context, card: Scorecard) -> None:
    from harness.scoring import bench

    metrics, items = bench.score(model, tokenizer, ctx.evals.benchmarks, ctx.spec_dir, seed=ctx.seed)
    card.metrics |= metrics
    card.items |= {f"bench.{task}": values for task, values in items.items()}
    kept = bench.retention(metrics, ctx.base.metrics, items) if ctx.base else None
    if kept is not None:
        card.metrics["bench.retention"] = kept


def _probes(model: Any, tokenizer: Any, ctx: Context, card: Scorecard, reference: Any) -> None:
    from harness.scoring import probes, suites

    suite, texts, swap_pairs = suites.load_probes(_path(ctx.evals.probe_suite, ctx.spec_dir))
    prompts = [p["prompt"] for p in swap_pairs]
    tokens, answers = probes.answer_lengths(model, tokenizer, prompts, suite.max_new_tokens)
    card.artifacts["probe_answers.json"] = [{"prompt": p, "answer": a} for p, a in zip(prompts, answers, strict=True)]
    if reference is None:  # the base model: only the length its answers have
        card.metrics[BASE_ANSWER_TOKENS] = tokens
        return
    if "overfit" in ctx.evals.probes:
        card.metrics |= probes.overfit(model, reference, tokenizer, ctx.train_pairs, ctx.heldout_pairs, texts)
    if "shortcut" in ctx.evals.probes:
        card.metrics["shortcut.swap_acc"] = probes.swap_accuracy(model, reference, tokenizer, swap_pairs)
        card.metrics[BASE_ANSWER_TOKENS] = tokens
        base_tokens = ctx.base.metrics.get(BASE_ANSWER_TOKENS) if ctx.base else None
        if base_tokens:
            card.metrics["shortcut.length_ratio"] = tokens / base_tokens


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

        bench.check(evals.benchmarks, spec_dir)
    if evals.probes:
        suites.load_probes(_path(evals.probe_suite, spec_dir))


def _path(value: str, spec_dir: Path | None) -> Path:
    path = resolve_path(value, spec_dir)
    if path is None:
        from harness.spec import SpecError

        raise SpecError(
            value, [("", None, "no such file (relative paths are tried from here, then the spec's folder)")]
        )
    return path
