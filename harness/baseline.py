"""The base model's scorecard: computed once per study, before the first trial.

It is the yardstick of every trial (bench.retention, shortcut.length_ratio) and of the report
(base vs recommended), and is logged on the sweep's parent run under the plain metric names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.spec import SweepSpec
from harness.trial import COMPLETE, TrialResult


def card_path(study_dir: Path) -> Path:
    return study_dir / "base" / "scorecard.json"


@dataclass
class BaselineRequest:
    spec: dict[str, Any]
    spec_dir: str
    output_dir: str  # the study's folder
    cache_dir: str
    verbose: bool = False
    number: int = -1  # events from the baseline carry -1 where trials carry their number

    @property
    def folder(self) -> Path:
        return Path(self.output_dir) / "base"


def run(request: BaselineRequest, events: Any) -> TrialResult:
    """Score the base model; runs in its own process (harness.worker)."""
    import time

    from harness import models, scoring
    from harness.worker import mark_phase

    spec = SweepSpec.model_validate(request.spec)
    clock = time.perf_counter()
    mark_phase(request.folder, "setup")
    events.put(("status", -1, "preparing the base model"))
    path = models.resolve(
        spec.model.name,
        Path(request.cache_dir),
        log=lambda text: events.put(("status", -1, text)),
        announce=lambda text: events.put(("note", -1, text)),
    )
    # the precision trials train in, so that base and trial scores compare
    weights = models.precision(spec.model.dtype, lora=spec.model.lora is not None).weights
    model, tokenizer = models.load(path, spec.model.revision, weights)
    mark_phase(request.folder, "scoring")
    events.put(("status", -1, "scoring the base model"))
    context = scoring.Context(spec.evals, Path(request.spec_dir), spec.seed, train=dict(spec.train))
    card = scoring.score(model, tokenizer, context, status=lambda text: events.put(("status", -1, text)))
    card_file = card_path(Path(request.output_dir))
    card_file.parent.mkdir(parents=True, exist_ok=True)
    partial = card_file.with_suffix(f".{os.getpid()}.tmp")  # whole or absent: workers may race here
    partial.write_text(json.dumps(card.to_json()))
    partial.replace(card_file)
    return TrialResult(COMPLETE, scores=card.metrics, seconds={"time.eval_s": time.perf_counter() - clock})
