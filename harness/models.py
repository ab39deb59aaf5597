"""Models: resolve a spec's model name to something loadable, load it, save a trial's result.

The toy model is built on first use and is then an ordinary model folder, loaded by the same
code as a hub id or a local folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.toy import TOY_MODEL, ensure_toy_model

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def cache_dir(output_dir: Path) -> Path:
    """Where built artefacts (the toy model) are cached: $HARNESS_CACHE_DIR, else <output-dir>/cache."""
    return Path(os.environ.get("HARNESS_CACHE_DIR") or output_dir / "cache")


def resolve(name: str, cache: Path, log: Any = None, announce: Any = None) -> str:
    """'toy' -> the built toy folder; a local folder -> its absolute path; anything else is a hub id.

    `announce` hears one-time work the user should know about (building the toy model); `log` its progress.
    """
    if name == TOY_MODEL:
        return str(ensure_toy_model(cache, log=log, announce=announce))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return name


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load(path: str, revision: str | None = None, dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer; a folder holding a PEFT adapter loads base + adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device()), tokenizer


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, _DTYPES[dtype])
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def save(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Keep a trial's final model (or LoRA adapter) with its tokenizer, loadable by `load`."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
