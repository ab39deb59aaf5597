"""The TRL adapter: the only module that knows TRL's API (it changes often).

Everything TRL-specific lives here: which DPOConfig fields exist, how a DPOConfig is built
from a spec's `train` section, the callbacks that stream metrics out of DPOTrainer, and
the training precision. The DPO loss itself is TRL's; nothing here re-implements it.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import math
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import refcache
from harness.progress import duration

if TYPE_CHECKING:
    from harness.refcache import RefCache
    from harness.tokcache import TokenCache

# Set by the harness, never by a spec: where outputs go and how they are reported.
HARNESS_OWNED = {
    "output_dir": "the harness writes each trial under --output-dir",
    "report_to": "the harness logs to MLflow itself",
    "run_name": "the harness names runs after the study and trial",
    "logging_dir": "the harness logs to MLflow itself",
    "push_to_hub": "push the kept model yourself after choosing a trial",
    "seed": "set the top-level 'seed' of the spec",
    "use_cpu": "the harness picks CPU or GPU automatically",
    "bf16": "set model.dtype: the harness picks the mixed precision that goes with it",
    "fp16": "set model.dtype: the harness picks the mixed precision that goes with it",
}

# Defaults the harness adds under the spec's `train` section; each can be overridden there.
TRAIN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 5,  # enough points for learning curves on 40-step toy trials
    "save_strategy": "no",  # the harness keeps the final model itself
    "save_total_limit": 1,  # with save_strategy set, checkpoints serve resuming a trial: the newest is enough
    "disable_tqdm": True,  # progress is shown by the harness, not by each trainer
    "dataloader_num_workers": 0,  # a trial is already its own process
    "max_length": 512,  # long enough for chat answers, bounded for memory
}


@functools.cache
def _dpo_fields() -> dict[str, Any]:
    from trl import DPOConfig

    hints = typing.get_type_hints(DPOConfig)
    import dataclasses

    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(DPOConfig) if f.init}


def check_train_fields(train: dict[str, Any], names_only: bool = False) -> list[tuple[str, str]]:
    """Problems with a spec's `train` mapping: unknown DPOConfig fields and values of the wrong type."""
    from pydantic import TypeAdapter, ValidationError

    fields = _dpo_fields()
    problems = []
    for key, value in train.items():
        if key in HARNESS_OWNED:
            problems.append((key, f"set by the harness: {HARNESS_OWNED[key]}"))
        elif key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            problems.append((key, f"not a DPOConfig field.{hint}"))
        elif not names_only:
            one = key in ONE_OR_MANY and isinstance(value, str)  # DPOConfig makes a list of it
            try:
                TypeAdapter(fields[key]).validate_python([value] if one else value)
            except ValidationError:
                problems.append((key, f"expected {_type_name(fields[key])}, got {value!r}"))
                continue
            if (bound := BOUNDS.get(key)) and isinstance(value, int | float) and not bound[0](value):
                problems.append((key, f"must be {bound[1]} (got {value})"))
    return problems


def as_numbers(train: dict[str, Any]) -> dict[str, Any]:
    """`train` with numbers written as strings ('5e-4': YAML 1.1 has no exponent without a dot) made numbers
    where DPOConfig's field is numeric; everything else as it was."""
    from pydantic import TypeAdapter, ValidationError

    fields, out = _dpo_fields(), dict(train)
    for key, value in train.items():
        if isinstance(value, str) and key in fields and _numeric(fields[key]):
            with contextlib.suppress(ValidationError):  # what cannot be read as a number, check_train_fields reports
                out[key] = TypeAdapter(fields[key]).validate_python(value)
    return out


def integer_field(key: str) -> bool:
    """Whether DPOConfig's field `key` takes whole numbers only (a batch size, a step count)."""
    tp = _dpo_fields().get(key)
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return tp is not None and all(a is int for a in args)


def _numeric(tp: Any) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return all(a in (int, float) for a in args)


ONE_OR_MANY = {"loss_type"}  # list fields for which DPOConfig also takes a single name
# Values the Trainer would only refuse mid-trial, or never (a negative weight decay trains on, wrongly).
BOUNDS: dict[str, tuple[Callable[[float], bool], str]] = {
    **dict.fromkeys(
        ["per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "max_length"],
        (lambda v: v > 0, "> 0"),
    ),
    **dict.fromkeys(["num_train_epochs", "learning_rate"], (lambda v: v > 0, "> 0")),
    "max_steps": (lambda v: v > 0 or v == -1, "> 0 (or -1: num_train_epochs decides)"),
    **dict.fromkeys(["weight_decay", "warmup_steps", "max_grad_norm"], (lambda v: v >= 0, ">= 0")),
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# In-training evaluation (TRL's eval_* metrics on the held-out pairs) is capped by default so
# that it can never dominate a trial: at most EVAL_SHARE of the training compute, MAX_EVALS times.
EVAL_SHARE = 0.25  # a quarter of training: enough for held-out curves, never the bulk of a trial
MAX_EVALS = 4  # points on each held-out learning curve when evaluation is cheap
# Forward passes per sequence: a training step runs the policy forward and backward (~3 forwards)
# plus the reference forward; an evaluation runs the two forwards only.
_TRAIN_PASSES, _EVAL_PASSES = 4, 2


def eval_steps(train: dict[str, Any], train_rows: list[dict], eval_rows: list[dict]) -> int | None:
    """Steps between in-training evaluations so they cost <= EVAL_SHARE of training; None: not even one fits.

    Cost is counted in characters of text through the model (prompt + answer, chosen and rejected).
    """
    if not eval_rows or not train_rows:
        return None
    setting = lambda key: train.get(key, _dpo_defaults()[key])  # noqa: E731
    batch = int(setting("per_device_train_batch_size")) * int(setting("gradient_accumulation_steps"))
    steps = int(setting("max_steps") or -1)
    if steps <= 0:  # epochs instead of steps: as many steps as the Trainer will take
        steps = math.ceil(float(setting("num_train_epochs")) * math.ceil(len(train_rows) / batch))
    train_cost = steps * batch * _TRAIN_PASSES * sum(map(pair_chars, train_rows)) / len(train_rows)
    eval_cost = _EVAL_PASSES * sum(map(pair_chars, eval_rows))
    evals = min(MAX_EVALS, steps, math.floor(EVAL_SHARE * train_cost / max(eval_cost, 1)))
    return math.ceil(steps / evals) if evals >= 1 else None


def pair_chars(pair: dict) -> int:
    """Characters a pair puts through the model: the prompt twice (with each answer) and both answers."""

    def size(part: Any) -> int:
        return len(part) if isinstance(part, str) else sum(len(m.get("content") or "") for m in part)

    return 2 * size(pair["prompt"]) + size(pair["chosen"]) + size(pair["rejected"])


@functools.cache
def _dpo_defaults() -> dict[str, Any]:
    import dataclasses

    from trl import DPOConfig

    return {f.name: f.default for f in dataclasses.fields(DPOConfig) if f.init}


def dpo_settings(
    train: dict[str, Any],
    output_dir: Path,
    seed: int,
    eval_every: int | None,
    mixed: str | None,
    has_eval: bool,
    precompute_ref: bool = False,
) -> dict[str, Any]:
    """DPOConfig's arguments: harness defaults, then the trial's resolved `train` settings.

    eval_every: steps between held-out evaluations (None: none); a spec's own eval_steps or
    eval_strategy wins, unless there is nothing held out. mixed: the Trainer's mixed precision
    ("bf16", "fp16" or None), from harness.models.precision. precompute_ref: reference log-probs
    come from the study's cache (harness.refcache), so TRL precomputes them and keeps no reference copy.
    """
    import torch

    settings: dict[str, Any] = {
        **TRAIN_DEFAULTS,
        "output_dir": str(output_dir),
        "report_to": [],
        "seed": seed,
        "data_seed": seed,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": mixed == "bf16",  # set both: TRL turns bf16 on when neither is given
        "fp16": mixed == "fp16",
    }
    if settings["use_cpu"]:  # TRL's memory-saving default costs a quarter of the time, saves nothing needed on CPU
        settings["gradient_checkpointing"] = False
    if eval_every is not None:
        settings |= {"eval_strategy": "steps", "eval_steps": eval_every}
    if "eval_steps" in train and "eval_strategy" not in train:  # asking for a cadence asks for evaluation
        settings["eval_strategy"] = "steps"
    settings |= train
    if precompute_ref:
        settings["precompute_ref_log_probs"] = True
    if not has_eval:  # the Trainer cannot evaluate without pairs
        settings["eval_strategy"] = "no"
    return settings


def dpo_config(
    train: dict[str, Any],
    output_dir: Path,
    seed: int,
    eval_every: int | None = None,
    mixed: str | None = None,
    has_eval: bool = True,
    precompute_ref: bool = False,
) -> Any:
    """Build TRL's DPOConfig (see dpo_settings)."""
    from trl import DPOConfig

    return DPOConfig(**dpo_settings(train, output_dir, seed, eval_every, mixed, has_eval, precompute_ref))


# The DPOConfig fields that shape TRL's reference forward pass beyond the token ids themselves: they are
# part of a reference log-prob's cache key (harness.refcache). Batch composition and padding are not:
# right padding under a causal mask changes the values only by float rounding.
REFERENCE_SETTINGS = ("max_length", "truncation_mode", "ld_alpha", "bf16", "fp16")


def resolved_train_settings(config: Any, keys: list[str]) -> dict[str, Any]:
    """The values a DPOConfig actually holds for the given keys (after TRL's own post-init)."""
    return {key: getattr(config, key) for key in keys}


def lora_config(r: int, alpha: int, dropout: float, target_modules: str | list[str]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint the Trainer saved under `folder` (train.save_strategy): a
    `checkpoint-<step>` folder whose trainer state, which the Trainer writes last, reads whole (a process
    killed while saving leaves a folder without it, or with an empty one after a power loss)."""
    steps = {}
    for path in Path(folder).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (_trainer_state(path) or {}).get("global_step") == int(step):
            steps[int(step)] = path
    return steps[max(steps)] if steps else None


def _finished(checkpoint: Path) -> bool:
    """Whether a checkpoint was saved at the training's last step (a trial stopped while it scored)."""
    state = _trainer_state(checkpoint) or {}
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def _trainer_state(checkpoint: Path | None) -> dict | None:
    """A checkpoint's trainer_state.json (the Trainer writes it last), None when absent or not whole."""
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())  # type: ignore[arg-type]
    except (TypeError, OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def trained_seconds(checkpoint: Path | None) -> tuple[float, float] | None:
    """The training (wall, CPU) seconds that led to a checkpoint, over every attempt that wrote it (each from
    building its trainer); None for no checkpoint, or one saved without the harness's clock (an older harness).
    Time spent past a checkpoint by an attempt that then died is not in it: it made nothing that lasted."""
    try:
        clock = (_trainer_state(checkpoint) or {})["stateful_callbacks"][_CLOCK]["attributes"]
        return float(clock["train_s"]), float(clock["train_cpu_s"])
    except (TypeError, ValueError, KeyError):
        return None


_CLOCK = "TrainingClock"


@functools.cache
def _clock_class() -> type:
    """The training time so far, saved in every checkpoint's trainer_state.json (the Trainer stores an
    ExportableState callback's state there, in the file it writes last), so a resumed trial counts its
    earlier attempts' training."""
    import time

    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class TrainingClock(TrainerCallback, ExportableState):
        def __init__(self, train_s: float = 0.0, train_cpu_s: float = 0.0):
            self.before = (train_s, train_cpu_s)
            self.started = (time.perf_counter(), time.process_time())

        def state(self) -> dict:
            wall, cpu = time.perf_counter() - self.started[0], time.process_time() - self.started[1]
            return {"args": {}, "attributes": {"train_s": self.before[0] + wall, "train_cpu_s": self.before[1] + cpu}}

        def on_train_begin(self, args, state, control, **kwargs):
            # a checkpoint of an older harness has no entry for it, and the Trainer's save would fail on the key
            state.stateful_callbacks.setdefault(_CLOCK, self.state())

    return TrainingClock


# The Trainer's end-of-training summary covers one train() call: after a resume, only the steps since the checkpoint
# (train_loss is their loss summed over every step), so it would misstate the trial.
TRAINER_SUMMARY = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")


def attempt_logs(logs: dict[str, float]) -> dict[str, float]:
    """A resumed training's logs without the Trainer's summary of this attempt alone."""
    return {k: v for k, v in logs.items() if k not in TRAINER_SUMMARY}


class TrialStopped(Exception):
    """Raised out of training when a callback decides the trial cannot go on."""


def train_dpo(
    model: Any,
    tokenizer: Any,
    train_rows: list[dict],
    eval_rows: list[dict],
    config: Any,
    peft_config: Any | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    on_eval: Callable[[int, dict[str, float]], bool] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    ref_cache: RefCache | None = None,
    resume_from: Path | None = None,
    token_cache: TokenCache | None = None,
    on_status: Callable[[str], None] | None = None,
) -> Any:
    """Run TRL's DPOTrainer and return the trained model (a PeftModel when LoRA is used).

    on_log(step, metrics) streams TRL's logged metrics; on_eval(step, metrics) returns True to
    stop (pruning); on_step(step, max_steps) reports progress; on_status(text) says what runs before the first
    step (preparing the pairs, the reference pass: minutes on a real set). A NaN loss raises TrialStopped.
    ref_cache: the study's reference log-probs; needs a config built with precompute_ref=True.
    token_cache: the study's pairs as TRL prepared them (tokenized): only pairs no earlier trial had are prepared.
    resume_from: a checkpoint of this same training (last_checkpoint): weights, optimizer, scheduler,
    RNG states and data position are restored, and training goes on from its step.
    """
    if ref_cache is not None and not config.precompute_ref_log_probs:
        raise ValueError("a reference cache needs precompute_ref_log_probs=True (dpo_config(precompute_ref=True))")
    trainer = dpo_trainer(
        model,
        tokenizer,
        train_rows,
        config,
        eval_rows,
        peft_config,
        callbacks=[_Relay(on_log, on_eval, on_step), _clock_class()(*(trained_seconds(resume_from) or ()))],
        ref_cache=ref_cache,
        token_cache=token_cache,
        on_status=on_status,
    )
    if resume_from is not None and _finished(resume_from):
        # the Trainer would take one more step from it (its stop check follows a step): its weights are the model
        trainer._load_from_checkpoint(str(resume_from))
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    _check_finite(trainer.model)
    return trainer.model


def dpo_trainer(
    model: Any,
    tokenizer: Any,
    train_rows: list[dict],
    config: Any,
    eval_rows: list[dict] | None = None,
    peft_config: Any | None = None,
    callbacks: list[Any] | None = None,
    ref_cache: RefCache | None = None,
    token_cache: TokenCache | None = None,
    on_status: Callable[[str], None] | None = None,
) -> Any:
    """The harness's DPOTrainer on these pairs, built (TRL prepares the pairs and, with precompute, runs the
    reference pass as it is built) but not trained; train_dpo's arguments."""
    from datasets import Dataset

    return _trainer_class()(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows and config.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        ref_cache=ref_cache,
        token_cache=token_cache,
        on_status=on_status,
    )


def _check_finite(model: Any) -> None:
    """A diverged run can log a finite loss and still leave inf/NaN weights; say so before scoring."""
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and not torch.isfinite(param).all():
            raise TrialStopped(f"weights became NaN or inf during training (first: {name}); learning rate too high?")


_KEY = "__harness_key"  # a pair's cache key, carried through TRL's preparation of the missing pairs
_CHUNK = 1000  # prepared rows to and from the token cache at a time
_IDS = ["prompt_ids", "chosen_ids", "rejected_ids"]  # a prepared pair's token ids: the reference forward's input
_TOKEN_CHUNK = 2000  # pairs TRL prepares at a time (per dataset_num_proc worker): the parallel study's share
_REF_CHUNK = refcache.CHUNK  # pairs whose reference log-probs are stored together (tests set it smaller)


@functools.cache
def _trainer_class() -> type:
    """DPOTrainer with the study's caches, each used when given. Overriding private methods ties this class to
    TRL's internals: tests/test_refcache.py and tests/test_tokcache.py check that it trains exactly as TRL does.

    token_cache: TRL prepares (`_prepare_dataset`: the chat template, tokenization, dropping pairs whose prompt
    fills max_length) only the pairs no earlier trial prepared, and the first pair (its prepared row types the
    set); the others come from the cache, in the dataset's order.

    ref_cache: the reference log-probs come from the cache; only the missing pairs go through TRL's own
    precompute (`_precompute_ref_logps`, the method TRL calls on the train and eval sets when
    precompute_ref_log_probs=True). With precompute on, TRL holds no reference model: full fine-tuning runs the
    reference forward on the policy before training starts, LoRA with the adapter disabled. When every pair is
    cached, no reference forward runs at all."""
    import sqlite3

    from datasets import Dataset, concatenate_datasets
    from transformers.utils import logging
    from trl import DPOTrainer

    logger = logging.get_logger("harness.training")

    class HarnessDPOTrainer(DPOTrainer):
        def __init__(
            self,
            *args: Any,
            ref_cache: RefCache | None,
            token_cache: TokenCache | None,
            on_status: Callable[[str], None] | None = None,
            **kwargs: Any,
        ):
            # DPOTrainer.__init__ prepares and precomputes
            self.ref_cache, self.token_cache, self.on_status = ref_cache, token_cache, on_status
            super().__init__(*args, **kwargs)

        def _say(self, text: str) -> None:
            if self.on_status is not None:
                self.on_status(text)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if self.token_cache is None or not isinstance(dataset, Dataset) or not len(dataset):
                if isinstance(dataset, Dataset) and len(dataset):
                    self._say(f"preparing {len(dataset):,} {dataset_name} pairs: chat template, tokens")
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            try:
                return self._prepare_with_cache(dataset, processing_class, args, dataset_name)
            # a full disk, a read-only folder, a value JSON cannot hold, rows the set's types cannot hold
            except (sqlite3.Error, TypeError, _Unusable) as exc:
                logger.warning("the study's token cache failed (%s); TRL prepares every pair of this trial", exc)
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _prepare_with_cache(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            """The pairs the cache lacks are prepared by TRL a chunk at a time and stored, each chunk by one of the
            trials lacking it (TokenCache.fill); then every row comes from the cache, in the dataset's order."""
            cache = self.token_cache
            keys = [cache.key(row) for row in dataset]
            have = cache.present(keys)
            missing: dict[str, int] = {}  # key -> its first index (a mix cycling a small source repeats pairs)
            for i, key in enumerate(keys):
                if key not in have:
                    missing.setdefault(key, i)

            def prepare(claimed: list[str]) -> Any:
                rows = dataset.select([missing.get(key, 0) for key in claimed]).add_column(_KEY, claimed)
                prepared = super(HarnessDPOTrainer, self)._prepare_dataset(rows, processing_class, args, dataset_name)
                if _KEY not in prepared.column_names or not set(prepared[_KEY]) <= set(claimed):
                    raise _Unusable("TRL's preparation did not keep each pair's key")
                made: set[str] = set()
                for start in range(0, len(prepared), _CHUNK):  # as Python objects a prepared row is big
                    part = prepared.select(range(start, min(start + _CHUNK, len(prepared))))
                    fresh = {row.pop(_KEY): row for row in part.to_list()}
                    made |= fresh.keys()
                    cache.put({key: row for key, row in fresh.items() if key in missing})
                cache.put({key: None for key in claimed if key not in made and key in missing})  # TRL dropped them
                return prepared

            # the first pair is prepared here (and stored if new) whatever the cache holds: it types the set's columns
            first = prepare([keys[0]]).remove_columns(_KEY).select([])
            features = _prepared_features(first.features, dataset.features)
            if missing:
                hits = sum(key in have for key in keys)
                cached = f"; {hits:,} from the token cache" if hits else ""
                progress = _pass_progress(
                    self._say, f"preparing the {dataset_name} pairs (chat template, tokens{cached})", "prepared"
                )
                cache.fill(list(missing), prepare, _TOKEN_CHUNK * max(1, args.dataset_num_proc or 1), progress)
            parts = []
            try:
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start : start + _CHUNK]
                    rows = cache.rows(chunk)
                    if kept := [rows[k] for k in chunk if rows[k] is not None]:  # a chunk TRL dropped whole: nothing
                        parts.append(Dataset.from_list(kept, features=features))
                return concatenate_datasets(parts) if parts else first.cast(features)
            except ValueError as exc:  # (pyarrow's cast errors among them): rows these types cannot hold
                raise _Unusable(f"the cached rows do not fit the set's types: {exc}") from exc

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            """TRL's precompute of the pairs' reference log-probs (only of those the study's cache lacks), the pairs
            handed to it longest first and only their token ids (TRL's collator reads nothing else); the values
            come back as TRL's two columns, in the dataset's order. TRL pads each batch to its longest pair, so in
            the dataset's order one long transcript among short ones makes its whole batch that long (HH-shaped
            pairs, batches of 8: half as many tokens again as sorted); longest first, a batch too big for memory
            fails at once, as harness.scoring's batches do."""
            if not isinstance(dataset, Dataset):  # TRL refuses an IterableDataset here, and says why
                return super()._precompute_ref_logps(dataset, name, batch_size)
            started = time.perf_counter()
            ids = dataset.select_columns(_IDS)
            widths, keys = [], []
            for rows in ids.iter(batch_size=_CHUNK):  # a chunk at a time: as Python lists, token ids are big
                for prompt, chosen, rejected in zip(*(rows[k] for k in _IDS), strict=True):
                    widths.append(len(prompt) + max(len(chosen), len(rejected)))
                    if self.ref_cache is not None:
                        keys.append(self.ref_cache.key(prompt, chosen, rejected))
            order = sorted(range(len(widths)), key=lambda i: -widths[i])  # stable: like widths keep their order
            ordered = ids.select(order)

            def precompute(indices: list[int]) -> tuple[list[float], list[float]]:
                computed = super(HarnessDPOTrainer, self)._precompute_ref_logps(
                    ordered.select(indices), name, batch_size
                )
                return list(computed["ref_chosen_logps"]), list(computed["ref_rejected_logps"])

            if self.ref_cache is None:
                self._say(f"reference log-probs of the {name} pairs: computing {len(order):,}")
                chosen, rejected = precompute(list(range(len(order))))
            else:
                keys = [keys[i] for i in order]
                progress = _pass_progress(self._say, f"reference log-probs of the {name} pairs", "computed")
                try:
                    chosen, rejected = self.ref_cache.fill(keys, precompute, chunk=_REF_CHUNK, progress=progress)
                except sqlite3.Error as exc:  # a full disk, a read-only file: the trial goes on without the cache
                    logger.warning(
                        "the study's reference cache failed (%s); TRL computes every pair of this trial", exc
                    )
                    self._say(f"reference log-probs of the {name} pairs: computing {len(order):,} (cache failed)")
                    chosen, rejected = precompute(list(range(len(order))))
                self.ref_cache.seconds += time.perf_counter() - started
            back = sorted(range(len(order)), key=order.__getitem__)  # where each pair of the dataset went
            chosen, rejected = [chosen[n] for n in back], [rejected[n] for n in back]
            return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)

    return HarnessDPOTrainer


class _Unusable(Exception):
    """The token cache cannot give this set back as TRL prepares it (a TRL change, an unforeseen type): TRL
    prepares the whole set itself. TRL's own errors are not this: they stop the trial, as without the cache."""


def _prepared_features(first: Any, given: Any) -> Any:
    """The prepared set's column types from its first row's (`first`): TRL keeps the given columns' types, typed
    over the whole set (a key only some messages carry is there); the token ids it adds are lists of int64,
    though one row's may be empty (typed null)."""
    from datasets import Features, List, Value

    features = Features({name: given.get(name, kind) for name, kind in first.items()})
    for name in _IDS:
        if features.get(name) == List(Value("null")):
            features[name] = List(Value("int64"))
    return features


def _pass_progress(say: Callable[[str], None], what: str, verb: str) -> Callable[[int, int], None]:
    """progress(done, total) of a pass over a set's pairs (done: by this trial and by others filling the study's
    cache beside it), said with the time left at the pace so far (the reference pass goes longest first, so that
    pace tends to overstate it)."""
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        text = f"{what}: {done:,}/{total:,} {verb}"
        if 0 < done < total:
            text += f", about {duration((time.perf_counter() - started) / done * (total - done))} left"
        say(text)

    return progress


def _relay_class() -> type:
    from transformers import TrainerCallback

    class Relay(TrainerCallback):
        def __init__(self, on_log, on_eval, on_step):
            self.on_log_fn, self.on_eval_fn, self.on_step_fn = on_log, on_eval, on_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(loss):
                raise TrialStopped(f"loss became {loss} at step {state.global_step}")
            if self.on_log_fn and logs:
                self.on_log_fn(state.global_step, logs)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.on_eval_fn and metrics and self.on_eval_fn(state.global_step, dict(metrics)):
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kwargs):
            if self.on_step_fn:
                self.on_step_fn(state.global_step, state.max_steps)

    return Relay


def _Relay(on_log, on_eval, on_step):  # noqa: N802 - reads as the class it builds
    return _relay_class()(on_log, on_eval, on_step)
