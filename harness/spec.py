"""The sweep spec: YAML -> a validated, immutable SweepSpec.

Every problem in a spec is reported at once, each with its key path and line, so a user
fixes a file in one round trip (torchtune's habit). Nothing here imports torch or TRL except
through `harness.training.check_train_fields`, which knows DPOConfig's fields.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from harness import metrics

SAMPLERS = ("tpe", "random", "grid", "gp", "nsga2", "cmaes")
PRUNERS = ("none", "median", "hyperband")
PROBES = ("overfit", "shortcut")


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """A YAML file's data and the line of each key path; SpecError for a file that is not UTF-8 YAML."""
    from harness.data import UnreadableFile, read_text  # data builds on the spec

    try:
        text = read_text(path, kind="YAML")
    except UnreadableFile as exc:
        raise SpecError(str(path), [("", exc.line, exc.problem)]) from None
    try:
        return yaml.safe_load(text), _line_index(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise SpecError(str(path), [("", line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None


class SpecError(Exception):
    """A spec (or a file it names) is invalid; carries every problem found."""

    def __init__(self, source: str, problems: list[tuple[str, int | None, str]]):
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p[1] or 0, p[0]))
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        lines = [f"{self.source}: {n} error{'s' if n != 1 else ''}"]
        for key, line, message in self.problems:
            where = f"{self.source}:{line}" if line else self.source
            lines.append(f"  {where}  {key or '(top level)'}: {message}")
        return "\n".join(lines)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Strict):
    r: int = Field(8, gt=0)  # rank 8 is PEFT's default and enough for identity edits
    alpha: int = Field(16, gt=0)  # alpha = 2r keeps the update scale of the usual recipes
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class ModelSpec(_Strict):
    name: str = "toy"  # the built-in toy model, a hub id, or a local folder
    revision: str | None = None  # hub revision (branch, tag or commit)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    lora: LoraSpec | None = None  # null: full fine-tuning
    ref_cache: bool = True  # reference log-probs computed once per study and reused (harness.refcache)
    token_cache: bool = True  # pairs as TRL prepares them (tokenized) kept per study and reused (harness.tokcache)


Format = Literal["auto", "standard", "conversational", "implicit", "hh", "sharegpt", "alpaca"]


class SourceSpec(_Strict):
    path: str | None = None  # toy:<name>, a .jsonl file or a .json array
    hf: str | None = None  # hub dataset id, for users who are online
    name: str | None = None  # hub dataset config
    split: str = "train"
    format: Format = "auto"  # auto: recognised row by row (harness.formats)

    @model_validator(mode="after")
    def _one_location(self) -> SourceSpec:
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of 'path' (toy:<name> or a .jsonl file) or 'hf' (a hub dataset id)")
        return self


class DataSpec(_Strict):
    sources: dict[str, SourceSpec] = Field(min_length=1)
    mix: dict[str, float] | None = None  # default: equal weights
    size: int = Field(256, gt=0)  # pairs drawn per trial from the mix
    eval_fraction: float = Field(0.1, ge=0, lt=1)  # held out per source, same for every trial
    eval_size: int = Field(64, ge=0)  # at most this many held out per source: held-out scoring stays cheap

    @field_validator("mix")
    @classmethod
    def _weights(cls, mix: dict[str, float] | None) -> dict[str, float] | None:
        if mix is None:
            return mix
        negative = [k for k, w in mix.items() if w < 0]
        if negative:
            raise ValueError(f"weights must be >= 0; negative: {', '.join(negative)}")
        if mix and sum(mix.values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return mix

    def weights(self) -> dict[str, float]:
        """Normalised mix weights over all sources (absent sources weigh 0)."""
        raw = self.mix or {name: 1.0 for name in self.sources}
        total = sum(raw.values())
        return {name: raw.get(name, 0.0) / total for name in self.sources}


class Dimension(_Strict):
    """One searched parameter: exactly one of float, int or choice."""

    float_: tuple[float, float] | None = Field(None, alias="float")
    int_: tuple[int, int] | None = Field(None, alias="int")
    choice: list[Any] | None = Field(None, min_length=1)
    log: bool = False
    step: float | None = Field(None, gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        given = [k for k in ("float", "int", "choice") if getattr(self, _attr(k)) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of float: [low, high], int: [low, high] or choice: [...]")
        bounds = self.float_ or self.int_
        if bounds is not None:
            low, high = bounds
            if low > high:
                raise ValueError(f"low > high: [{low}, {high}]")
            if self.log and low <= 0:
                raise ValueError(f"log range needs low > 0, got [{low}, {high}]")
            if self.log and self.step is not None:
                raise ValueError("'log' and 'step' cannot be combined")
        elif self.log or self.step is not None:
            raise ValueError("'log' and 'step' apply to float and int ranges only")
        return self

    @property
    def kind(self) -> str:
        return "float" if self.float_ is not None else "int" if self.int_ is not None else "choice"

    def describe(self) -> str:
        if self.choice is not None:
            return "choice " + ", ".join(map(str, self.choice))
        low, high = self.float_ or self.int_  # type: ignore[misc]
        return f"{self.kind} [{low}, {high}]{' log' if self.log else ''}"


def _attr(key: str) -> str:
    return {"float": "float_", "int": "int_"}.get(key, key)


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"


class PrunerSpec(_Strict):
    type: Literal["none", "median", "hyperband"] = "none"
    every: int = Field(10, gt=0)  # report an intermediate score every N training steps
    metric: str = "eval_loss"  # held-out DPO loss: separates trials early, where accuracy ties
    warmup_steps: int = Field(10, ge=0)  # median: never prune before this step


class ReplicatesSpec(_Strict):
    """After the search: re-train the best configurations with new seeds, so the verdict sees seed noise."""

    top_k: int = Field(2, gt=0)  # the best configurations re-trained (the winner and its runner-up)
    seeds: int = Field(3, ge=2)  # training seeds per configuration, its search trial's included


class SearchSpec(_Strict):
    sampler: Literal["tpe", "random", "grid", "gp", "nsga2", "cmaes"] = "tpe"
    trials: int = Field(8, gt=0)  # total finished trials the study should hold
    max_failures: int = Field(3, ge=1)  # a sweep gives up after this many failed trials in a row
    space: dict[str, Dimension] = Field(default_factory=dict)
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[str] = Field(default_factory=list)  # e.g. "bench.retention >= 0.95"
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    replicates: ReplicatesSpec | None = None  # e.g. {top_k: 2, seeds: 3}; null: one seed per trial
    keep_models: int | None = Field(None, ge=1)  # the best N trials keep model/ (a full 8B is 16 GB); null: all


class BenchmarkSpec(_Strict):
    task: str  # an lm-eval task YAML, or a task name when online
    limit: int | None = Field(None, gt=0)  # items scored (lm-eval's limit); absent: evals.bench_limit, null: all


def _benchmark_kind(value: Any) -> str:
    return "BenchmarkSpec" if isinstance(value, dict | BenchmarkSpec) else "str"


Benchmark = Annotated[
    Annotated[str, Tag("str")] | Annotated[BenchmarkSpec, Tag("BenchmarkSpec")], Discriminator(_benchmark_kind)
]


class EvalsSpec(_Strict):
    identity: str | None = None  # an identity suite YAML (evals/identity/*.yaml)
    benchmarks: list[Benchmark] = Field(default_factory=list)  # task YAMLs or names, or {task, limit}
    # Items per benchmark (lm-eval's `limit`: its first N documents) unless an entry sets its own; null: all.
    # 200 puts the headline accuracy's standard error near 0.035 (sqrt(0.25/200)), enough to see a capability
    # loss, while a 500-item multiple-choice set no longer costs more per checkpoint than training.
    bench_limit: int | None = Field(200, gt=0)
    probes: list[Literal["overfit", "shortcut"]] = Field(default_factory=list)
    probe_suite: str = "evals/probes/toy.yaml"  # probe data; the default is the toy world's

    @model_validator(mode="after")
    def _default_limits(self) -> EvalsSpec:
        """An entry without `limit` gets bench_limit now, so a dumped and re-read spec means the same."""

        def resolved(entry: str | BenchmarkSpec) -> str | BenchmarkSpec:
            if isinstance(entry, str) or "limit" in entry.model_fields_set:
                return entry
            return BenchmarkSpec(task=entry.task, limit=self.bench_limit)

        entries = [resolved(e) for e in self.benchmarks]
        object.__setattr__(self, "benchmarks", entries)  # frozen: set once, while validating
        return self

    def benchmark_entries(self) -> list[tuple[str, int | None]]:
        """(task YAML or name, item limit or None for all) per benchmark."""
        return [(e, self.bench_limit) if isinstance(e, str) else (e.task, e.limit) for e in self.benchmarks]


class SweepSpec(_Strict):
    study: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec
    train: dict[str, Any] = Field(default_factory=dict)  # DPOConfig fields; searched ones override
    search: SearchSpec
    evals: EvalsSpec = Field(default_factory=EvalsSpec)

    def spec_hash(self) -> str:
        """Identifies the experiment; search.trials is left out so raising it resumes the same study.

        Only values that differ from the defaults count, so a key added to the schema later (with a
        default that keeps today's behaviour) does not turn running studies into "a different spec".
        """
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        data.get("search", {}).pop("trials", None)
        data.get("search", {}).pop("replicates", None)  # added later, it re-trains finished trials: same study
        data.get("search", {}).pop("keep_models", None)  # what stays on disk, not what is run
        # the token cache prepares the rows TRL would: how fast, not what is run
        if data.get("model", {}).pop("token_cache", None) is not None and not data["model"]:
            del data["model"]  # as if it had never been written
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def with_trials(self, trials: int) -> SweepSpec:
        return self.model_copy(update={"search": self.search.model_copy(update={"trials": trials})})


# ---------------------------------------------------------------- loading and checks


def load_spec(path: str | Path, check_files: bool = True) -> SweepSpec:
    """Read, validate and return a spec; raise SpecError listing every problem."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        specs = ", ".join(sorted(p.name for p in path.glob("*.y*ml")))
        raise SpecError(
            source, [("", None, "a folder, not a file" + (f": name one of its specs ({specs})" if specs else ""))]
        )
    if not path.is_file():
        raise SpecError(source, [("", None, "no such file")])
    raw, lines = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(source, [("", 1, "a spec is a mapping with keys study, data, train, search, ...")])
    _numbers_as_numbers(raw)
    problems = _schema_problems(raw) + _semantic_problems(raw, path.parent if check_files else None)
    if problems:
        raise SpecError(source, [(key, _line_of(lines, key), msg) for key, msg in problems])
    return SweepSpec.model_validate(raw)


def _numbers_as_numbers(raw: dict) -> None:
    """`5e-4` where TRL wants a number is a number: YAML 1.1 (PyYAML) reads exponents without a dot as strings,
    and `train` and searched choices are passed on as written. Typed fields (ranges, mix weights) convert already;
    a string field (model.revision: 8620e35, a git hash) stays a string."""
    from harness.training import as_numbers

    if isinstance(raw.get("train"), dict):
        raw["train"] = as_numbers(raw["train"])
    space = raw.get("search", {}).get("space") if isinstance(raw.get("search"), dict) else None
    for key, dim in (space or {}).items() if isinstance(space, dict) else []:
        if "." not in str(key) and isinstance(dim, dict) and isinstance(dim.get("choice"), list):
            dim["choice"] = [as_numbers({key: value})[key] for value in dim["choice"]]


def _schema_problems(raw: dict) -> list[tuple[str, str]]:
    try:
        SweepSpec.model_validate(raw)
    except ValidationError as exc:
        return [_explain(err) for err in exc.errors()]
    return []


def _explain(err: dict) -> tuple[str, str]:
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    loc = [p for p in loc if p not in ("tuple[float, float]", "tuple[int, int]", "str", "list[str]", "BenchmarkSpec")]
    key = ".".join(_attr_to_key(p) for p in loc)
    if err["type"] == "extra_forbidden":
        return key, _unknown(loc[-1], _allowed_keys(loc[:-1]), "key")
    if err["type"] == "missing":
        return key, "required key is missing"
    if loc[:2] == ["evals", "benchmarks"] and len(loc) == 3:
        return key, f"expected a task YAML or lm-eval task name, or {{task: ..., limit: N}} (got {err.get('input')!r})"
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if err["type"] not in ("value_error",) and not isinstance(got, dict | list):
        message += f" (got {got!r})"
    return key, message


def _attr_to_key(part: str) -> str:
    return {"float_": "float", "int_": "int"}.get(part, part)


_SECTIONS: dict[str, type[BaseModel]] = {
    "": SweepSpec,
    "model": ModelSpec,
    "model.lora": LoraSpec,
    "data": DataSpec,
    "search": SearchSpec,
    "search.pruner": PrunerSpec,
    "search.replicates": ReplicatesSpec,
    "evals": EvalsSpec,
}


def _allowed_keys(loc: list[str]) -> list[str]:
    path = ".".join(loc)
    if path.startswith("data.sources."):
        cls: type[BaseModel] = SourceSpec
    elif path.startswith("search.space."):
        cls = Dimension
    elif path.startswith("search.objectives."):
        cls = Objective
    elif path.startswith("evals.benchmarks."):
        cls = BenchmarkSpec
    else:
        cls = _SECTIONS.get(path, SweepSpec)
    return [f.alias or name for name, f in cls.model_fields.items()]


def _unknown(name: str, allowed: Iterable[str], what: str) -> str:
    allowed = list(allowed)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {what} '{name}'.{hint} Valid: {', '.join(allowed)}"


def _semantic_problems(raw: dict, spec_dir: Path | None) -> list[tuple[str, str]]:
    """Cross-section checks, run on the raw mapping so they report alongside schema errors."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    space = search.get("space") if isinstance(search.get("space"), dict) else {}
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    evals = raw.get("evals") if isinstance(raw.get("evals"), dict) else {}
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    problems: list[tuple[str, str]] = []
    mix = data.get("mix")
    if isinstance(mix, dict):
        problems += [(f"data.mix.{k}", _unknown(k, sources, "source")) for k in mix if k not in sources]
    if model.get("dtype") == "float16" and not model.get("lora"):
        from harness.models import FP16_FULL_FINETUNE

        problems.append(("model.dtype", FP16_FULL_FINETUNE.removeprefix("model.dtype float16 ")))
    problems += _train_problems(train, space)
    if model.get("ref_cache") is True:
        from harness.refcache import conflicts

        problems += [("model.ref_cache", f"{why}; set model.ref_cache: false") for why in conflicts(train)]
    problems += _space_problems(space, sources, model, search.get("sampler"))
    problems += _metric_problems(search, evals)
    problems += _probe_problems(data, evals)
    if spec_dir is not None:
        problems += _file_problems(sources, evals, spec_dir)
    return problems


def _train_problems(train: dict, space: dict) -> list[tuple[str, str]]:
    from harness.training import check_train_fields

    problems = [(f"train.{k}", msg) for k, msg in check_train_fields(train)]
    beta = train.get("beta")
    if isinstance(beta, int | float) and beta <= 0:
        problems.append(("train.beta", f"β must be > 0 (got {beta})"))
    searched_train = {k: v for k, v in space.items() if "." not in k}
    for key, msg in check_train_fields({k: None for k in searched_train}, names_only=True):
        problems.append((f"search.space.{key}", msg))
    problems += _searched_value_problems(searched_train)
    beta_dim = space.get("beta")
    # A log range starting at 0 is already reported by the range itself: one problem, one message.
    low = _lowest(beta_dim) if isinstance(beta_dim, dict) and not beta_dim.get("log") else None
    if low is not None and low <= 0:
        problems.append(("search.space.beta", f"β must be > 0, but the space reaches {low}"))
    return problems


def _searched_value_problems(searched_train: dict) -> list[tuple[str, str]]:
    """The values a searched DPOConfig field can take, checked as `train` values are: each choice, a range's two
    ends (the bounds are thresholds, so the ends decide) and 0 inside an int range, and a float range for an integer
    field."""
    from harness.training import check_train_fields, integer_field

    problems: list[tuple[str, str]] = []
    for key, dim in searched_train.items():
        if not _valid_dimension(dim) or check_train_fields({key: None}, names_only=True):
            continue  # the schema's problem (one problem, one message), or not a field (said above)
        values = next((dim[k] for k in ("choice", "float", "int") if isinstance(dim.get(k), list)), [])
        if "float" in dim and integer_field(key):
            problems.append(
                (
                    f"search.space.{key}",
                    f"takes whole numbers: search it with int: [low, high], not float: {dim['float']}",
                )
            )
            continue
        found = [msg for value in values for _, msg in check_train_fields({key: value})]
        if not found and "int" in dim and values[0] < 0 < values[1]:
            found = [msg for _, msg in check_train_fields({key: 0})]  # max_steps: -1 and > 0, not the 0 between
        problems += [(f"search.space.{key}", msg) for msg in found]
    return list(dict.fromkeys(problems))


def _valid_dimension(dim: Any) -> bool:
    try:
        Dimension.model_validate(dim)
    except ValidationError:
        return False
    return True


def _space_problems(space: dict, sources: dict, model: dict, sampler: Any) -> list[tuple[str, str]]:
    problems = []
    for key, dim in space.items():
        head, _, rest = key.partition(".")
        if head == "mix" and rest not in sources:
            problems.append((f"search.space.{key}", _unknown(rest, sources, "source")))
        elif head == "mix" and isinstance(dim, dict) and _lowest(dim) is not None and _lowest(dim) < 0:
            problems.append(
                (f"search.space.{key}", f"mix weights must be >= 0, but the range starts at {_lowest(dim)}")
            )
        elif head == "lora":
            if not model.get("lora"):
                problems.append((f"search.space.{key}", "searching LoRA settings needs model.lora to be set"))
            elif rest not in ("r", "alpha", "dropout"):
                problems.append((f"search.space.{key}", _unknown(rest, ("r", "alpha", "dropout"), "LoRA knob")))
        elif key == "data.source":
            problems += _source_choice_problems(dim, sources, space)
        elif rest and head not in ("mix", "lora"):
            problems.append(
                (
                    f"search.space.{key}",
                    _unknown(key, ["<DPOConfig field>", "mix.<source>", "data.source", "lora.r"], "knob"),
                )
            )
        if sampler == "grid" and isinstance(dim, dict) and "choice" not in dim:
            problems.append((f"search.space.{key}", "the grid sampler searches 'choice' dimensions only"))
    return problems


def _source_choice_problems(dim: Any, sources: dict, space: dict) -> list[tuple[str, str]]:
    """data.source: {choice: [a, b]} trains each trial on one source; it replaces the mix, so no mix knob beside it."""
    key = "search.space.data.source"
    choice = dim.get("choice") if isinstance(dim, dict) else None
    if not isinstance(choice, list):
        return [(key, f"expected {{choice: [<source>, ...]}} over the data sources ({', '.join(sources)})")]
    problems = [(key, _unknown(str(c), sources, "source")) for c in choice if c not in sources]
    if any(k.startswith("mix.") for k in space):
        problems.append((key, "data.source picks one source per trial; it cannot be searched with mix.<source> knobs"))
    return problems


def _lowest(dim: dict) -> float | None:
    """The smallest value a raw space dimension can take, when it is readable."""
    values = dim.get("float") or dim.get("int") or dim.get("choice")
    numbers = [v for v in values if isinstance(v, int | float)] if isinstance(values, list) else []
    return min(numbers) if numbers else None


def _metric_problems(search: dict, evals: dict) -> list[tuple[str, str]]:
    produced = metrics.produced_by(evals)
    problems = []
    objectives = search.get("objectives") if isinstance(search.get("objectives"), list) else []
    for i, obj in enumerate(objectives):
        name = obj.get("metric") if isinstance(obj, dict) else None
        if isinstance(name, str) and not metrics.is_produced(name, produced):
            problems.append((f"search.objectives.{i}.metric", metrics.unknown_message(name, produced)))
    constraints = search.get("constraints") if isinstance(search.get("constraints"), list) else []
    for i, text in enumerate(constraints):
        try:
            name, _, _ = metrics.parse_constraint(str(text))
        except ValueError as exc:
            problems.append((f"search.constraints.{i}", str(exc)))
            continue
        if not metrics.is_produced(name, produced):
            problems.append((f"search.constraints.{i}", metrics.unknown_message(name, produced)))
    pruner = search.get("pruner") if isinstance(search.get("pruner"), dict) else {}
    if pruner.get("type", "none") != "none" and len(objectives) > 1:
        message = "Optuna's pruners are single-objective; use one objective or pruner type none"
        problems.append(("search.pruner.type", message))
    if "metric" in pruner and pruner["metric"] not in metrics.TRL_EVAL:
        message = f"the pruner watches a held-out TRL metric while training; one of: {', '.join(metrics.TRL_EVAL)}"
        problems.append(("search.pruner.metric", message))
    sampler = search.get("sampler")
    if sampler == "cmaes" and len(objectives) > 1:
        problems.append(("search.sampler", "cmaes is single-objective; use nsga2 or tpe for several objectives"))
    return problems


def _probe_problems(data: dict, evals: dict) -> list[tuple[str, str]]:
    """The overfit probe compares training with held-out pairs: it needs some held out."""
    probes = evals.get("probes") if isinstance(evals.get("probes"), list) else []
    if "overfit" in probes and data.get("eval_fraction", 0.1) == 0:
        message = (
            "evals.probes asks for 'overfit', which compares training with held-out pairs, but "
            "data.eval_fraction is 0: hold some out (e.g. 0.1) or drop 'overfit' from evals.probes"
        )
        return [("data.eval_fraction", message)]
    return []


def _file_problems(sources: dict, evals: dict, spec_dir: Path) -> list[tuple[str, str]]:
    from harness.data import source_problem

    problems = []
    for name, src in sources.items():
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            msg = source_problem(src["path"], spec_dir)
            if msg:
                problems.append((f"data.sources.{name}.path", msg))
    suites = {"identity": evals.get("identity")}
    if evals.get("probes"):
        suites["probe_suite"] = evals.get("probe_suite", EvalsSpec.model_fields["probe_suite"].default)
    for key, value in suites.items():
        if isinstance(value, str) and resolve_path(value, spec_dir) is None:
            problems.append((f"evals.{key}", f"no such file: {value}"))
    benchmarks = evals.get("benchmarks") if isinstance(evals.get("benchmarks"), list) else []
    for i, bench in enumerate(benchmarks):
        key = f"evals.benchmarks.{i}"
        if isinstance(bench, dict):
            bench, key = bench.get("task"), f"{key}.task"
        if isinstance(bench, str) and bench.endswith((".yaml", ".yml")) and resolve_path(bench, spec_dir) is None:
            problems.append((key, f"no such file: {bench}"))
    return problems


# The harness's own folder: its bundled suites (evals/...) are found from a spec anywhere, the way the
# defaults (evals.probe_suite) name them.
HARNESS_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(value: str, spec_dir: Path | None) -> Path | None:
    """A spec's relative paths are tried from the working directory, then from the spec's folder, then
    from the harness's own folder (its bundled evals/)."""
    candidates = [Path(value)]
    if not Path(value).is_absolute():
        candidates += [spec_dir / value] if spec_dir is not None else []
        candidates.append(HARNESS_ROOT / value)
    return next((p.resolve() for p in candidates if p.exists()), None)


# ---------------------------------------------------------------- YAML line numbers


def _line_index(node: yaml.Node | None, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[key] = key_node.start_mark.line + 1
            _line_index(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}.{i}"
            out[key] = item.start_mark.line + 1
            _line_index(item, key, out)
    return out


def _line_of(lines: dict[str, int], key: str) -> int | None:
    """The line of the key, or of its closest ancestor present in the file."""
    parts = key.split(".") if key else []
    while parts:
        line = lines.get(".".join(parts))
        if line is not None:
            return line
        parts.pop()
    return None


def summary(spec: SweepSpec) -> dict[str, Any]:
    """What `harness validate` prints: the resolved shape of the sweep."""
    return {
        "study": spec.study,
        "model": spec.model.name + (" + LoRA" if spec.model.lora else ""),
        "data": (
            {name: "searched (data.source)" for name in spec.data.sources}
            if "data.source" in spec.search.space
            else {name: round(w, 3) for name, w in spec.data.weights().items()}
        ),
        "space": {k: d.describe() for k, d in spec.search.space.items()},
        "trials": spec.search.trials,
        "sampler": spec.search.sampler,
        "objectives": [f"{o.direction} {o.metric}" for o in spec.search.objectives],
        "constraints": list(spec.search.constraints),
        "pruner": spec.search.pruner.type,
        "replicates": (
            f"top {spec.search.replicates.top_k} x {spec.search.replicates.seeds} seeds"
            if spec.search.replicates
            else "none"
        ),
        "models kept": f"the best {spec.search.keep_models}" if spec.search.keep_models else "every trial's",
    }
