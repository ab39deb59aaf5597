"""`harness eval`: the scorecard of any model folder, hub id or trial checkpoint, next to its base.

A trial checkpoint (outputs/<study>/trial-NNN) carries its resolved config and its pairs, so
it is scored exactly as the sweep scored it, against the model it was trained from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.scoring import Context, Scorecard
from harness.spec import EvalsSpec, SpecError, read_yaml
from harness.trial import MODEL_DIR, MODEL_REMOVED


@dataclass
class EvalTarget:
    model: str  # what is scored: a folder or hub id
    base: str | None  # its reference: the model DPO started from
    evals: EvalsSpec
    spec_dir: Path | None
    seed: int = 0
    train_pairs: list[dict] = field(default_factory=list)
    heldout_pairs: list[dict] = field(default_factory=list)
    train: dict[str, Any] | None = None  # the trial's train settings (max_length, truncation_mode)
    train_sources: list[str] | None = None
    heldout_sources: list[str] | None = None
    shares: dict[str, float] | None = None


def resolve_target(target: str, evals_file: Path | None, base: str | None, cache: Path, log: Any = None) -> EvalTarget:
    """Work out what to score, against what, with which suites."""
    from harness import models

    folder = Path(target)
    trial_dir = folder if (folder / "trial_config.yaml").is_file() else folder.parent
    config = (
        yaml.safe_load((trial_dir / "trial_config.yaml").read_text())
        if (trial_dir / "trial_config.yaml").is_file()
        else None
    )
    evals, spec_dir = _evals(evals_file, config)  # first: it needs no model
    if config is not None:
        if not (trial_dir / MODEL_DIR).is_dir() and (trial_dir / MODEL_REMOVED).is_file():
            why = (trial_dir / MODEL_REMOVED).read_text().strip()
            raise models.ModelError(f"MODEL '{target}': the trial's model was removed, {why}")
        if not (trial_dir / MODEL_DIR).is_dir():
            raise models.ModelError(f"MODEL '{target}': the trial folder holds no model/ (did the trial finish?)")
        model = str(trial_dir / MODEL_DIR)
    else:
        models.check(target, what="MODEL")
        model = models.resolve(target, cache, announce=log)
    if base:
        models.check(base, what="--base")
        base = models.resolve(base, cache, announce=log)
    elif config is not None:
        base = config["model"]["path"]  # what the trial was trained from, as resolved then
        models.check(base, what="the trial's base model (give --base)")
    pairs = _pairs(trial_dir) if config is not None else {}
    seed = int(config["seed"]) if config else 0
    return EvalTarget(
        model,
        base,
        evals,
        spec_dir,
        seed,
        pairs.get("train", []),
        pairs.get("heldout", []),
        train=config.get("train") if config else None,
        train_sources=pairs.get("train_sources"),
        heldout_sources=pairs.get("heldout_sources"),
        shares=(config.get("data") or {}).get("shares") if config else None,
    )


def _evals(evals_file: Path | None, config: dict | None) -> tuple[EvalsSpec, Path | None]:
    if evals_file is not None:
        raw, _ = read_yaml(evals_file)
        section = raw.get("evals") if isinstance(raw, dict) else None
        if not isinstance(section, dict):
            raise SpecError(str(evals_file), [("evals", None, "expected an 'evals:' mapping (a sweep spec has one)")])
        try:
            return EvalsSpec.model_validate(section), evals_file.parent
        except Exception as exc:
            raise SpecError(str(evals_file), [("evals", None, str(exc))]) from None
    if config is not None and config.get("evals"):
        return EvalsSpec.model_validate(config["evals"]), Path(config.get("spec_dir") or ".")
    raise SpecError("--evals", [("", None, "give --evals FILE (a sweep spec or a YAML with an 'evals:' section)")])


def _pairs(trial_dir: Path) -> dict[str, list[dict]]:
    path = trial_dir / "pairs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def evaluate(target: EvalTarget, log: Any = print) -> tuple[Scorecard, Scorecard | None]:
    """(the model's card, the base's card); probes that need pairs or a base are skipped when absent."""
    from harness import models, scoring

    evals = target.evals
    base_card, base_model = None, None
    if target.base:
        log(f"scoring the base model {target.base}")
        base_model, base_tok = models.load(target.base)
        base_card = scoring.score(
            base_model, base_tok, Context(evals, target.spec_dir, target.seed, train=target.train), status=log
        )
    probes = list(evals.probes)
    if base_model is None and probes:
        log("probes need a base model (--base): skipped")
        probes = []
    if "overfit" in probes and not target.heldout_pairs:
        log("overfit probes need the trial's pairs (score a trial folder): skipped")
        probes.remove("overfit")
    log(f"scoring {target.model}")
    model, tokenizer = models.load(target.model)
    ctx = Context(
        evals.model_copy(update={"probes": probes}),
        target.spec_dir,
        target.seed,
        target.train_pairs,
        target.heldout_pairs,
        base_card,
        train=target.train,
        train_sources=target.train_sources,
        heldout_sources=target.heldout_sources,
        shares=target.shares,
    )
    card = scoring.score(model, tokenizer, ctx, base_model, status=log)
    for note in card.notes:
        log(f"note: {note}")
    return card, base_card
