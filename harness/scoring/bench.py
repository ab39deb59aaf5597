"""Benchmarks: lm-eval tasks run on the in-memory model, scored as bench.<task>.<metric>.

lm-eval is the engine and this is the only module that knows its API. A benchmark entry is a
task YAML (evals/bench/*.yaml, data read locally) or, for users who are online, an lm-eval task
name, each with an item limit (lm-eval's own `limit`: the task's first N documents). Every
benchmark is run zero-shot, greedily, with the model's chat template when it has one.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import logging
import math
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.spec import SpecError, resolve_path

YAML_SUFFIXES = (".yaml", ".yml")
HEADLINE = ("acc", "exact_match", "acc_norm")  # a task's primary metric: the first of these it reports
# datasets' file loaders: with these, data_files are local paths (for a hub dataset they are repo paths)
FILE_LOADERS = ("json", "csv", "parquet", "text", "arrow")
OUTPUT_TYPES = ("loglikelihood", "loglikelihood_rolling", "multiple_choice", "generate_until")
# Warnings lm-eval gives for every in-memory model; expected here, so not shown.
_EXPECTED_WARNINGS = ("`pretrained` model kwarg is not of type `str`", "Passed an already-initialized model")
MAX_BATCH = 16  # lm-eval's batch of requests; fewer when full-vocabulary logits would not fit (_batch_size)
TYPICAL_WIDTH = 256  # tokens per request assumed when sizing that batch (lm-eval pads to the longest)

Entry = str | tuple[str, int | None]  # a task YAML or name, optionally with its item limit (None: all)


class BenchmarkError(RuntimeError):
    """A benchmark could not be loaded or run; the message names it."""


def is_task_file(entry: str) -> bool:
    return entry.endswith(YAML_SUFFIXES)


# ------------------------------------------------------------------------------------------ check


def check(benchmarks: list[str], spec_dir: Path | None) -> None:
    """Validate every task YAML without running it (raises SpecError naming the file).

    Other entries are lm-eval task names: lm-eval resolves them at run time (their data needs
    the network), so they are not checked here.
    """
    for entry in benchmarks:
        if is_task_file(entry):
            load_task_config(entry, spec_dir)


def load_task_config(entry: str, spec_dir: Path | None) -> dict[str, Any]:
    """Read and validate a task YAML; relative data files are made absolute from its folder.

    lm-eval (via `datasets`) reads relative data_files from the working directory; reading them
    from the YAML's folder makes a benchmark run the same from anywhere.
    """
    path = resolve_path(entry, spec_dir)
    if path is None:
        where = "the working directory" + (f" or {spec_dir}" if spec_dir else "")
        raise SpecError(entry, [("", None, f"no such file (looked in {where})")])
    text, config = _read_yaml(path)
    lines = _key_lines(text)
    problems = [(key, lines.get(key), message) for key, message in _problems(config, path.parent)]
    if problems:
        raise SpecError(str(path), problems)
    return _with_absolute_data_files(config, path.parent)


def _read_yaml(path: Path) -> tuple[str, Any]:
    """Parse as lm-eval does (`include:` merged, `!function` imported from the YAML's folder)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        return path.read_text(), load_yaml(path, resolve_func=True)
    except (OSError, yaml.YAMLError, ValueError, ImportError, AttributeError) as exc:
        raise SpecError(str(path), [("", None, f"not a loadable lm-eval task config: {exc}")]) from None


def _problems(config: Any, folder: Path) -> list[tuple[str, str]]:
    from lm_eval.config.task import TaskConfig

    if not isinstance(config, dict):
        return [("", f"expected a mapping of lm-eval task fields, got {type(config).__name__}")]
    if "group" in config:
        return [("group", "group configs are not supported; list each task's YAML instead")]
    fields = set(TaskConfig.__dataclass_fields__)
    problems = [(key, _unknown(key, fields)) for key in config if key not in fields]
    if not isinstance(config.get("task"), str):
        problems.append(("task", "required: the task's name (a string)"))
    if config.get("output_type", "generate_until") not in OUTPUT_TYPES:
        problems.append(("output_type", f"{config['output_type']!r} is not one of {', '.join(OUTPUT_TYPES)}"))
    if not (config.get("dataset_path") or config.get("custom_dataset")):
        problems.append(("dataset_path", "required: a datasets loader ('json', 'csv') or a hub dataset id"))
    problems += [("dataset_kwargs.data_files", f"no such file: {f}") for f in _missing_files(config, folder)]
    if not problems:
        try:
            TaskConfig(**config)
        except (TypeError, ValueError) as exc:
            problems.append(("", f"lm-eval rejects this config: {exc}"))
    return problems


def _unknown(key: str, fields: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(fields), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown lm-eval task field '{key}'.{hint}"


def _local_data_files(config: dict[str, Any]) -> list[str]:
    if config.get("dataset_path") not in FILE_LOADERS:
        return []
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    values = files.values() if isinstance(files, dict) else [files]
    return [f for v in values if v for f in ([v] if isinstance(v, str) else v)]


def _missing_files(config: dict[str, Any], folder: Path) -> list[str]:
    # data_files may be glob patterns; absolute ones are checked as given
    return [f for f in _local_data_files(config) if "://" not in f and not glob.glob(str(folder / f))]


def _with_absolute_data_files(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    if not files or config.get("dataset_path") not in FILE_LOADERS:
        return config

    def absolute(value: Any) -> Any:
        if isinstance(value, list):
            return [absolute(v) for v in value]
        return value if "://" in value or Path(value).is_absolute() else str((folder / value).resolve())

    files = {split: absolute(v) for split, v in files.items()} if isinstance(files, dict) else absolute(files)
    return {**config, "dataset_kwargs": {**kwargs, "data_files": files}}


def _key_lines(text: str) -> dict[str, int]:
    """'key' / 'key.sub' -> line number, for pointing at a problem in the file."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # compose only: custom tags are fine
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{prefix}{key.value}"
                out[name] = key.start_mark.line + 1
                walk(value, name + ".")

    walk(root, "")
    return out


# ------------------------------------------------------------------------------------------ score


@dataclass
class BenchScores:
    metrics: dict[str, float] = field(default_factory=dict)  # bench.<task>.<metric>[.<filter>]
    items: dict[str, list[float]] = field(default_factory=dict)  # task -> per-item primary score, doc order
    higher_is_better: dict[str, dict[str, bool | None]] = field(default_factory=dict)  # lm-eval's, per task
    tasks: list[str] = field(default_factory=list)  # every task (and group) lm-eval reported


def score(
    model: Any,
    tokenizer: Any,
    benchmarks: Sequence[Entry],
    spec_dir: Path | None,
    seed: int = 0,
    batch_size: int | None = None,
) -> BenchScores:
    """Run lm_eval.simple_evaluate on the loaded model (transformers or PEFT) and its tokenizer.

    Tasks sharing an item limit run in one simple_evaluate call (lm-eval's `limit` is per call).
    Raises SpecError for an invalid task YAML, BenchmarkError naming a benchmark that cannot be
    loaded (e.g. a task name offline). Global RNG state and the model's train/eval mode are kept.
    """
    entries = [(b, None) if isinstance(b, str) else (b[0], b[1]) for b in benchmarks]
    if not entries:
        return BenchScores()
    was_training = model.training
    out = BenchScores()
    try:
        with _quiet(), _rng_kept():
            manager, tasks = _load_tasks([task for task, _ in entries], spec_dir)
            by_limit: dict[int | None, list[Any]] = {}
            for (_, limit), loaded in zip(entries, tasks, strict=True):
                by_limit.setdefault(limit, []).extend(loaded)
            size = batch_size or _batch_size(model)
            for limit, group in by_limit.items():
                results = _evaluate(model, tokenizer, manager, group, seed, size, limit)
                out.metrics |= _metrics(results["results"])
                out.items |= _items(results["results"], results["samples"])
                out.higher_is_better |= results.get("higher_is_better") or {}
                out.tasks += [t for t in results["results"] if t not in out.tasks]
    finally:
        model.train(was_training)  # HFLM switches the model to eval mode
    return out


def _batch_size(model: Any) -> int:
    """lm-eval takes log-softmax over full-vocabulary logits of a whole batch of requests: keep that
    batch inside the scoring budget for a typical request width (lm-eval's memory is not ours to plan)."""
    from harness.scoring import memory

    shape = memory.Shape.of(model)
    budget = memory.Budget.for_device(getattr(model, "device", "cpu"))
    per_request = TYPICAL_WIDTH * shape.vocab * 4 * 2  # float32 logits and their log-softmax
    return max(1, min(MAX_BATCH, budget.activation_bytes // per_request))


def _evaluate(
    model: Any, tokenizer: Any, manager: Any, tasks: list[Any], seed: int, batch_size: int, limit: int | None
) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    return lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
        tasks=tasks,
        task_manager=manager,  # without one, simple_evaluate indexes every built-in task (~10-40 s)
        num_fewshot=0,
        limit=limit,  # the task's first `limit` documents; None: all
        apply_chat_template=bool(getattr(tokenizer, "chat_template", None)),  # chat models answer in turns
        log_samples=True,  # per-item scores, for bootstrap intervals
        bootstrap_iters=0,  # no stderr: the report bootstraps the items itself
        use_cache=None,
        cache_requests=False,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )


def _load_tasks(benchmarks: list[str], spec_dir: Path | None) -> tuple[Any, list[list[Any]]]:
    """Build every benchmark before running any, so a bad one fails fast and by name (tasks per entry)."""
    from lm_eval.tasks import TaskManager

    names = [b for b in benchmarks if not is_task_file(b)]
    # Indexing lm-eval's thousands of built-in tasks takes seconds: only when a name needs it.
    manager = TaskManager(include_defaults=bool(names))
    if names:
        unknown = [n for n in names if n not in manager.all_tasks]
        if unknown:
            raise BenchmarkError(_unknown_names(unknown, manager.all_tasks))
    tasks: list[list[Any]] = []
    for entry in benchmarks:
        spec = load_task_config(entry, spec_dir) if is_task_file(entry) else entry
        try:
            loaded = manager.load(spec)
        except Exception as exc:  # lm-eval and datasets raise many kinds; all mean "cannot load"
            raise BenchmarkError(_load_failure(entry, exc)) from exc
        top = loaded.get("groups", {}).get(entry)  # a group keeps its aggregate row
        tasks.append([top] if top is not None else list(loaded["tasks"].values()))
    return manager, tasks


def _unknown_names(unknown: list[str], known: list[str]) -> str:
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        lines.append(f"Unknown benchmark {name!r}: neither a task YAML (.yaml) nor an lm-eval task.{hint}")
    return "\n".join(lines)


def _load_failure(entry: str, exc: Exception) -> str:
    message = f"benchmark {entry!r} could not be loaded: {type(exc).__name__}: {exc}"
    if not is_task_file(entry):
        offline = any(os.environ.get(v) == "1" for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
        message += (
            "\nlm-eval task names download their data from the Hugging Face Hub"
            + (" and this process is offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)" if offline else "")
            + "; without network, use a task YAML with local data (see evals/bench/)."
        )
    return message


def _metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """lm-eval's 'acc,none' -> 'bench.<task>.acc'; other filters keep their name: '...exact_match.strict'."""
    out: dict[str, float] = {}
    for task, row in results.items():
        for key, value in row.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not _is_number(value):
                continue
            out[f"bench.{task}.{metric}" + ("" if filt == "none" else f".{filt}")] = float(value)
    return out


def _items(results: dict[str, dict[str, Any]], samples: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Each task's per-document primary score, in document order (for bootstrap intervals)."""
    out: dict[str, list[float]] = {}
    for task, logged in samples.items():
        key = primary_metric(_metrics({task: results.get(task, {})}), task)
        if key is None:
            continue
        metric, _, filt = key.removeprefix(f"bench.{task}.").partition(".")
        rows = sorted((s for s in logged if s.get("filter") == (filt or "none")), key=lambda s: s["doc_id"])
        values = [s.get(metric) for s in rows]
        if values and all(_is_number(v) for v in values):  # some metrics log tuples, aggregated later
            out[task] = [float(v) for v in values]
    return out


def _is_number(value: Any) -> bool:
    try:
        return not isinstance(value, (str, bool, tuple, list, dict)) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------- headline


def primary_metric(task_metrics: dict[str, float], task: str) -> str | None:
    """The key of a task's headline metric in a `score` metrics dict (acc for MC, exact_match for
    generation), or None when the task has no metric there."""
    prefix = f"bench.{task}."
    keys = [k for k in task_metrics if k.startswith(prefix)]
    for name in HEADLINE:
        for key in keys:
            rest = key.removeprefix(prefix)
            if rest == name or rest.startswith(f"{name}."):
                return key
    return keys[0] if keys else None


def retention(
    trial: Mapping[str, float],
    base: Mapping[str, float],
    tasks: Iterable[str],
    higher_is_better: Mapping[str, Mapping[str, bool | None]],
) -> tuple[float | None, list[str]]:
    """bench.retention: the share of the base model's headline score each task keeps, averaged over tasks,
    and a note for every task left out and why.

    Per task: trial/base where lm-eval says higher is better, base/trial where lower is (perplexities);
    1 = as good as the base, below 1 = worse, either way."""
    ratios, notes = [], []
    for task in tasks:
        key = primary_metric(base, task)
        if key is None:
            notes.append(f"bench.retention leaves out {task}: the base model has no score for it")
            continue
        if key not in trial:
            notes.append(f"bench.retention leaves out {task}: this model has no {key}")
            continue
        metric = key.removeprefix(f"bench.{task}.").split(".")[0]
        better = (higher_is_better.get(task) or {}).get(metric)
        if better is None:
            notes.append(f"bench.retention leaves out {task}: lm-eval does not say whether higher {metric} is better")
            continue
        mine, theirs = (trial[key], base[key]) if better else (base[key], trial[key])
        if theirs <= 0 or mine < 0:
            values = f"{key} = {trial[key]:.4g}, base {base[key]:.4g}"
            notes.append(f"bench.retention leaves out {task}: no meaningful ratio ({values})")
            continue
        ratios.append(mine / theirs)
    return (sum(ratios) / len(ratios) if ratios else None), notes


# --------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval at WARNING (unless the user set its level), no progress bars, no environment probe.

    simple_evaluate records the environment (torch's collect_env: many subprocesses, ~1-10 s) and
    the git hash of the working directory; the harness tracks both itself, so they are skipped.
    """
    from unittest import mock

    import datasets.utils.logging as ds_logging
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.evaluator
    import lm_eval.models.huggingface
    from tqdm import tqdm

    lm_logger = logging.getLogger("lm_eval")
    level = lm_logger.level
    if level == logging.NOTSET:
        lm_logger.setLevel(logging.WARNING)
    hf_logger = logging.getLogger(lm_eval.models.huggingface.__name__)
    expected = _DropMessages(_EXPECTED_WARNINGS)
    hf_logger.addFilter(expected)
    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()

    def silent_tqdm(*args: Any, **kwargs: Any) -> Any:
        return tqdm(*args, **{**kwargs, "disable": True})

    modules = (lm_eval.api.task, lm_eval.api.model, lm_eval.models.huggingface)
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(mock.patch.object(module, "tqdm", silent_tqdm))
        stack.enter_context(mock.patch.object(lm_eval.evaluator, "add_env_info", lambda storage: None))
        stack.enter_context(mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", lambda: None))
        try:
            yield
        finally:
            lm_logger.setLevel(level)
            hf_logger.removeFilter(expected)
            if bars:
                ds_logging.enable_progress_bar()


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """simple_evaluate seeds the global RNGs; give the caller (a training run) its own back."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
