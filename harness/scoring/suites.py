"""Eval suite files (evals/**/*.yaml), validated as strictly as the sweep spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.spec import SpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sampling(_Strict):
    k: int = Field(4, gt=0)  # samples per prompt for identity.hit_rate_sampled
    temperature: float = Field(0.8, gt=0)


class IdentitySuite(_Strict):
    """Who the model should say it is, and held-out prompts that ask."""

    name: str
    new_names: list[str] = Field(min_length=1)
    old_names: list[str] = Field(min_length=1)
    system_prompt: str | None = None
    answer_templates: list[str] = Field(min_length=1)  # "{name}" is replaced by a new or an old name
    sampling: Sampling = Field(default_factory=Sampling)
    max_new_tokens: int = Field(32, gt=0)
    prompts: list[str] = Field(min_length=1)  # held out: in no training data

    @model_validator(mode="after")
    def _check(self) -> IdentitySuite:
        missing = [t for t in self.answer_templates if "{name}" not in t]
        if missing:
            raise ValueError(f"answer_templates must contain '{{name}}': {missing}")
        both = {n.lower() for n in self.new_names} & {n.lower() for n in self.old_names}
        if both:
            raise ValueError(f"names cannot be both new and old: {sorted(both)}")
        return self


class ProbeSuite(_Strict):
    """Data for the overfitting and shortcut probes; file paths are relative to the suite file."""

    name: str
    neutral_texts: str  # JSONL of {"text": ...}
    swap_pairs: str  # JSONL of conversational pairs whose rejected answer carries the spurious phrase
    spurious_phrase: str
    max_new_tokens: int = Field(32, gt=0)


def load_yaml_model(path: Path, model: type[BaseModel]) -> Any:
    """Parse a suite file into `model`, raising SpecError with every problem and its key path."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(str(path), [("", None, f"cannot read: {exc}")]) from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [(".".join(map(str, e["loc"])), None, e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise SpecError(str(path), problems) from None


def load_identity(path: Path) -> IdentitySuite:
    return load_yaml_model(path, IdentitySuite)


def load_probes(path: Path) -> tuple[ProbeSuite, list[str], list[dict]]:
    """The probe suite with its neutral texts and swap pairs read and checked."""
    import json

    suite = load_yaml_model(path, ProbeSuite)
    rows: dict[str, list] = {}
    for key in ("neutral_texts", "swap_pairs"):
        file = path.parent / getattr(suite, key)
        try:
            rows[key] = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError) as exc:
            raise SpecError(str(path), [(key, None, f"cannot read {file}: {exc}")]) from None
    texts = [row.get("text") for row in rows["neutral_texts"]]
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise SpecError(str(path), [("neutral_texts", None, 'rows must be {"text": "..."} with non-empty text')])
    pairs = rows["swap_pairs"]
    if not pairs or not all(isinstance(p, dict) and {"prompt", "chosen", "rejected"} <= set(p) for p in pairs):
        raise SpecError(str(path), [("swap_pairs", None, "rows must be pairs with prompt, chosen and rejected")])
    return suite, texts, pairs
