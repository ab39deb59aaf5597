"""The page's tables as plain rows: header facts, leaderboard, identity samples, failures, comparison.

Values stay raw here (numbers, strings from the data); the template formats and escapes them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.metrics import FAMILIES
from harness.report.data import COMPLETE, FAIL, PRUNED, RUNNING, StudyRecord, TrialRecord
from harness.report.stats import Difference, paired_difference
from harness.report.verdict import BASE_BY_DEFINITION, Flag, Pick, Verdict, flags, higher_is_better, item_key

# ---------------------------------------------------------------- header


@dataclass
class Facts:
    model: str
    sources: list[tuple[str, str, float | None]]  # (name, where from, mix weight)
    size: Any
    sampler: str  # "" when the spec was not found
    objectives: list[tuple[str, str]]  # (metric, direction)
    space: list[tuple[str, str]]  # (param, description)
    counts: dict[str, int]  # state -> trials
    compute_s: float
    started: Any
    finished: Any
    versions: dict[str, str]
    identity_names: tuple[list[str], list[str]] | None
    replicates: str = ""  # "the best 2 configurations x 3 training seeds", or "" without search.replicates


def facts(record: StudyRecord) -> Facts:
    spec = record.spec
    data, search = spec.get("data", {}), spec.get("search", {})
    model = spec.get("model", {})
    lora = model.get("lora")
    starts = [t.started for t in record.trials if t.started]
    ends = [t.finished for t in record.trials if t.finished]
    return Facts(
        model=str(model.get("name", "—")) + (_lora(lora, search.get("space", {})) if lora else ""),
        sources=_sources(data, search.get("space", {})),
        size=data.get("size"),
        sampler=str(search.get("sampler", "")),
        objectives=list(zip(record.objectives, record.directions, strict=True)),
        space=[(name, _describe(dim)) for name, dim in search.get("space", {}).items()],
        counts=_counts(record),
        compute_s=sum(t.duration_s or 0.0 for t in record.trials),
        started=min(starts) if starts else None,
        finished=max(ends) if ends else None,
        versions=record.versions,
        identity_names=record.identity_names,
        replicates=_replicates(search.get("replicates")),
    )


def _replicates(reps: dict | None) -> str:
    if not reps:
        return ""
    return f"the best {reps.get('top_k')} configurations × {reps.get('seeds')} training seeds each"


def _lora(lora: dict, space: dict) -> str:
    rank = "searched" if "lora.r" in space else lora.get("r")
    return f" + LoRA (r {rank})"


def _sources(data: dict, space: dict) -> list[tuple[str, str, float | None]]:
    """(name, where from, mix weight); the weight is None when the search sets it."""
    sources = data.get("sources", {})
    raw = data.get("mix") or {name: 1.0 for name in sources}
    total = sum(raw.values()) or 1.0
    out = []
    for name, src in sources.items():
        where = (src.get("path") or f"hf:{src.get('hf')}") if isinstance(src, dict) else str(src)
        searched = f"mix.{name}" in space or "data.source" in space
        out.append((name, str(where), None if searched else raw.get(name, 0.0) / total))
    return out


def _describe(dim: dict) -> str:
    if dim.get("choice") is not None:
        return "choice of " + ", ".join(f"{c:g}" if isinstance(c, float) else str(c) for c in dim["choice"])
    kind = "float" if dim.get("float") is not None else "int"
    low, high = dim.get(kind) or ("?", "?")
    return f"{kind} [{low}, {high}]" + (" log" if dim.get("log") else "")


def _counts(record: StudyRecord) -> dict[str, int]:
    found = Counter(t.state for t in record.trials)
    return {state: found.get(state, 0) for state in (COMPLETE, PRUNED, FAIL, RUNNING)}


# ---------------------------------------------------------------- leaderboard


@dataclass
class Column:
    key: str
    label: str
    kind: str  # objective | param | metric | info
    higher_is_better: bool | None = None


@dataclass
class Cell:
    value: Any  # raw: the template formats it
    goodness: float | None = None  # 0 (worst) .. 1 (best) among complete trials: the cell's tint


@dataclass
class LeaderRow:
    trial: TrialRecord
    rank: int | None
    cells: list[Cell]
    flags: list[Flag]
    role: str  # recommended | runner-up | pareto | "" : how the row is highlighted


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[LeaderRow]
    base: list[Any] = field(default_factory=list)  # the base model's value per column (None where it has none)


def leaderboard(record: StudyRecord, pick: Pick) -> Leaderboard:
    columns = _columns(record)
    ranked = {t.number: i + 1 for i, t in enumerate(pick.ranking)}
    others = sorted((t for t in record.trials if t.number not in ranked), key=_other_order)
    goodness = _goodness(columns, pick.ranking)
    rows = [
        LeaderRow(
            trial=t,
            rank=ranked.get(t.number),
            cells=[Cell(_value(t, c), goodness.get((t.number, c.key))) for c in columns],
            flags=flags(t.scores),
            role=_role(t, pick),
        )
        for t in [*pick.ranking, *others]
    ]
    base_scores = {**BASE_BY_DEFINITION, **record.base_scores}
    base = [base_scores.get(c.label) if c.kind in ("metric", "objective") else None for c in columns]
    return Leaderboard(columns, rows, base)


def _other_order(trial: TrialRecord) -> tuple[int, int]:
    return ({RUNNING: 0, PRUNED: 1}.get(trial.state, 2), trial.number)


def _columns(record: StudyRecord) -> list[Column]:
    cols = [
        Column(f"objective:{i}", m, "objective", d == "maximize")
        for i, (m, d) in enumerate(zip(record.objectives, record.directions, strict=True))
    ]
    params = list(record.spec.get("search", {}).get("space", {}))
    params += sorted({p for t in record.trials for p in t.params} - set(params))
    cols += [Column(f"param:{p}", p, "param") for p in params]
    metrics = sorted({m for t in record.trials for m in t.scores} - set(record.objectives), key=_metric_order)
    cols += [Column(m, m, "metric", higher_is_better(m, record)) for m in metrics]
    return cols


def _metric_order(name: str) -> tuple[int, str]:
    family = name.split(".")[0]
    return (FAMILIES.index(family) if family in FAMILIES else len(FAMILIES), name)  # scorecard columns


def _value(trial: TrialRecord, column: Column) -> Any:
    kind, _, key = column.key.partition(":")
    if column.kind == "objective":
        return trial.values[int(key)] if trial.values else None
    if column.kind == "param":
        return trial.params.get(key)
    return trial.scores.get(column.key)


def _goodness(columns: list[Column], ranked: list[TrialRecord]) -> dict[tuple[int, str], float]:
    """Each metric scaled to 0..1 over complete trials, oriented so that 1 is best."""
    out = {}
    for column in columns:
        if column.higher_is_better is None:
            continue
        values = {t.number: _value(t, column) for t in ranked}
        numbers = [v for v in values.values() if isinstance(v, int | float)]
        if len(set(numbers)) < 2:
            continue
        low, high = min(numbers), max(numbers)
        for number, v in values.items():
            if isinstance(v, int | float):
                scaled = (v - low) / (high - low)
                out[(number, column.key)] = scaled if column.higher_is_better else 1 - scaled
    return out


def _role(trial: TrialRecord, pick: Pick) -> str:
    if trial.replicate_of is not None:
        return f"seed {trial.seed} of trial {trial.replicate_of}"
    if pick.recommended is trial:
        return "recommended"
    if pick.runner_up is trial:
        return "runner-up"
    if any(t is trial for t in pick.pareto):
        return "pareto"
    return ""


# ---------------------------------------------------------------- identity samples


@dataclass
class Answer:
    text: str
    hit: bool
    leak: bool


@dataclass
class Sample:
    prompt: str
    answers: list[Answer | None]  # one per column of `Samples.columns`


@dataclass
class Samples:
    columns: list[str]
    rows: list[Sample]


def samples(record: StudyRecord, pick: Pick) -> Samples | None:
    """Greedy answers to the held-out identity prompts: base, recommended and worst side by side."""
    sources: list[tuple[str, list[dict]]] = [("base model", record.base_generations)]
    if pick.recommended is not None:
        sources.append((f"recommended (trial {pick.recommended.number})", pick.recommended.generations or []))
    if pick.worst is not None:
        sources.append((f"worst (trial {pick.worst.number})", pick.worst.generations or []))
    sources = [(name, gens) for name, gens in sources if gens]
    if not sources:
        return None
    by_prompt = [{g.get("prompt"): g for g in gens} for _, gens in sources]
    prompts = list(dict.fromkeys(g.get("prompt") for _, gens in sources for g in gens))
    rows = [Sample(str(p), [_answer(table.get(p)) for table in by_prompt]) for p in prompts]
    return Samples([name for name, _ in sources], rows)


def _answer(generation: dict | None) -> Answer | None:
    if generation is None:
        return None
    return Answer(str(generation.get("greedy", "")), bool(generation.get("hit")), bool(generation.get("leak")))


# ---------------------------------------------------------------- failures


def failures(record: StudyRecord) -> list[TrialRecord]:
    return sorted((t for t in record.trials if t.state in (FAIL, PRUNED)), key=lambda t: t.number)


# ---------------------------------------------------------------- several studies


@dataclass
class CompareRow:
    metric: str
    higher_is_better: bool | None
    values: list[tuple[float | None, float | None]]  # per study: (recommended, its base)
    first_vs_second: Difference | None = None  # the two recommendations, paired over items


def comparison(records: list[StudyRecord], verdicts: list[Verdict]) -> list[CompareRow]:
    """The studies' recommended trials metric by metric (the union of their verdict tables)."""
    picks = [v.pick.recommended for v in verdicts]
    metrics = list(dict.fromkeys(r.metric for v in verdicts for r in v.rows))
    rows = []
    for metric in metrics:
        values = [
            (t.scores.get(metric) if t else None, {**BASE_BY_DEFINITION, **rec.base_scores}.get(metric))
            for rec, t in zip(records, picks, strict=True)
        ]
        paired = _paired(metric, picks[:2]) if _same_evals(records) else None
        rows.append(CompareRow(metric, higher_is_better(metric), values, paired))
    return rows


def _same_evals(records: list[StudyRecord]) -> bool:
    """Items pair across studies only when both were scored on the same eval suites."""
    return len(records) >= 2 and records[0].spec.get("evals") == records[1].spec.get("evals")


def _paired(metric: str, trials: list[TrialRecord | None]) -> Difference | None:
    if len(trials) < 2 or None in trials:
        return None
    a, b = trials
    key = item_key(metric, a.scores, a.items or {})
    if key is None:
        return None
    return paired_difference(a.items[key], (b.items or {}).get(key, []))
