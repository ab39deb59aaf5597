"""The TRL adapter: the only module that knows TRL's API (it changes often).

Everything TRL-specific lives here: which DPOConfig fields exist, how a DPOConfig is built
from a spec's `train` section, the callbacks that stream metrics out of DPOTrainer, and
the training precision. The DPO loss itself is TRL's; nothing here re-implements it.
"""

from __future__ import annotations

import difflib
import functools
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Set by the harness, never by a spec: where outputs go and how they are reported.
HARNESS_OWNED = {
    "output_dir": "the harness writes each trial under --output-dir",
    "report_to": "the harness logs to MLflow itself",
    "run_name": "the harness names runs after the study and trial",
    "logging_dir": "the harness logs to MLflow itself",
    "push_to_hub": "push the kept model yourself after choosing a trial",
    "seed": "set the top-level 'seed' of the spec",
    "use_cpu": "the harness picks CPU or GPU automatically",
}

# Defaults the harness adds under the spec's `train` section; each can be overridden there.
TRAIN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 5,  # enough points for learning curves on 40-step toy trials
    "save_strategy": "no",  # the harness keeps the final model itself
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
            try:
                TypeAdapter(fields[key]).validate_python(value)
            except ValidationError:
                problems.append((key, f"expected {_type_name(fields[key])}, got {value!r}"))
    return problems


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def dpo_config(
    train: dict[str, Any], output_dir: Path, seed: int, has_eval: bool, eval_every: int | None = None
) -> Any:
    """Build TRL's DPOConfig: harness defaults, then the trial's resolved `train` settings."""
    import torch
    from trl import DPOConfig

    on_gpu = torch.cuda.is_available()
    settings: dict[str, Any] = {
        **TRAIN_DEFAULTS,
        "output_dir": str(output_dir),
        "report_to": [],
        "seed": seed,
        "data_seed": seed,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
    }
    if not on_gpu:  # TRL's memory-saving default costs a quarter of the time and saves nothing that matters on CPU
        settings["gradient_checkpointing"] = False
    if has_eval:
        max_steps = int(train.get("max_steps") or 0)
        steps = eval_every or max(1, max_steps // 4 if max_steps > 0 else 50)
        settings |= {"eval_strategy": "steps", "eval_steps": steps}
    settings |= train
    return DPOConfig(**settings)


def resolved_train_settings(config: Any, keys: list[str]) -> dict[str, Any]:
    """The values a DPOConfig actually holds for the given keys (after TRL's own post-init)."""
    return {key: getattr(config, key) for key in keys}


def lora_config(r: int, alpha: int, dropout: float, target_modules: str | list[str]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")


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
) -> Any:
    """Run TRL's DPOTrainer and return the trained model (a PeftModel when LoRA is used).

    on_log(step, metrics) streams TRL's logged metrics; on_eval(step, metrics) returns True to
    stop (pruning); on_step(step, max_steps) reports progress. A NaN loss raises TrialStopped.
    """
    from datasets import Dataset
    from trl import DPOTrainer

    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows and config.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_Relay(on_log, on_eval, on_step)],
    )
    trainer.train()
    _check_finite(trainer.model)
    return trainer.model


def _check_finite(model: Any) -> None:
    """A diverged run can log a finite loss and still leave inf/NaN weights; say so before scoring."""
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and not torch.isfinite(param).all():
            raise TrialStopped(f"weights became NaN or inf during training (first: {name}); learning rate too high?")


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
