"""Models: check and resolve a spec's model name, choose the training precision, load, save.

The toy model is built on first use and is then an ordinary model folder, loaded by the same
code as a hub id or a local folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.progress import first_line
from harness.toy import TOY_MODEL, ensure_toy_model

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
VALID_MODELS = (
    "Valid: 'toy' (the built-in toy model), a local folder holding a saved model (config.json and a tokenizer, "
    "as save_pretrained writes them), or a hub id (org/name) that is in the Hugging Face cache or reachable"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelError(Exception):
    """A model cannot be used; the message names it and says what would be valid."""


def check(name: str, revision: str | None = None, what: str = "model.name", reach_hub: bool = True) -> None:
    """Fail fast, before anything is written, when `name` cannot be loaded (nothing is downloaded
    but a hub model's config, and only when online and not cached; never with reach_hub=False)."""
    if name == TOY_MODEL:
        return
    folder = Path(name).expanduser()
    if folder.is_dir():
        _check_folder(folder, f"{what} '{name}'")
    elif not _HUB_ID.match(name):
        raise ModelError(f"{what} '{name}': no such folder. {VALID_MODELS}.")
    elif reach_hub:
        _check_hub(name, revision, f"{what} '{name}'")


def _check_folder(folder: Path, label: str) -> None:
    if (folder / "adapter_config.json").is_file():  # a LoRA checkpoint: PEFT loads its base itself
        return
    if not (folder / "config.json").is_file():
        raise ModelError(f"{label}: the folder {folder.resolve()} holds no model (no config.json). {VALID_MODELS}.")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # a broken or foreign config.json: transformers raises several kinds
        raise ModelError(f"{label}: {folder / 'config.json'} is not a model config ({first_line(exc)}).") from None
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ModelError(f"{label}: the folder {folder.resolve()} holds no tokenizer. {VALID_MODELS}.")


def _check_hub(name: str, revision: str | None, label: str) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, revision=revision, local_files_only=True)
        return
    except Exception:  # not cached: try the hub, unless offline
        pass
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        raise ModelError(
            f"{label}: not a local folder, and not in the Hugging Face cache while offline (HF_HUB_OFFLINE). "
            f"{VALID_MODELS}."
        )
    try:
        AutoConfig.from_pretrained(name, revision=revision)
    except Exception as exc:  # unknown repo, gated, no network: all mean the same to the user
        reason = first_line(exc)
        raise ModelError(
            f"{label}: not a local folder, and the hub cannot provide it ({reason}). {VALID_MODELS}."
        ) from None


# ---------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """How a model is trained: the dtype its weights live in, and the Trainer's mixed precision.

    fp16 gradients underflow without loss scaling, so float16 is only ever used with the
    Trainer's `fp16` mode (autocast plus a gradient scaler) and never for full fine-tuning.
    """

    weights: str  # float32 | bfloat16 | float16
    mixed: str | None  # "bf16" | "fp16" | None


def precision(dtype: str, lora: bool) -> Precision:
    """The training precision for a spec's model.dtype on this machine; ModelError when it cannot train."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    if dtype == "float16" and not lora:
        raise ModelError(FP16_FULL_FINETUNE)
    if not cuda:
        if dtype == "float16":
            raise ModelError("model.dtype float16 trains only on a GPU (loss scaling needs one); on CPU set float32")
        return Precision("float32" if dtype == "auto" else dtype, None)
    if dtype == "bfloat16" and not bf16:
        raise ModelError(
            "model.dtype bfloat16: this GPU does not support bfloat16; set dtype: auto "
            "(float32 weights trained with fp16 mixed precision and loss scaling)"
        )
    if dtype == "float16":  # LoRA: frozen fp16 base, float32 adapters, scaled fp16 autocast
        return Precision("float16", "fp16")
    if bf16:
        return Precision("bfloat16" if dtype == "auto" else dtype, "bf16")
    return Precision("float32", "fp16")  # no bf16: float32 master weights, fp16 autocast with a GradScaler


FP16_FULL_FINETUNE = (
    "model.dtype float16 cannot be fully fine-tuned: float16 weights get no loss scaling and their gradients "
    "underflow. Set dtype: auto (bfloat16 where the GPU has it, else float32 weights with fp16 mixed "
    "precision), float32 or bfloat16, or train LoRA adapters (model.lora)"
)


def parameter_count(name: str, revision: str | None = None) -> int | None:
    """The model's parameters, counted on the meta device from its config (no weights are loaded); None for the
    toy or a config that is not at hand (what a fully fine-tuned copy takes on disk: times weight_bytes)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if name == TOY_MODEL:
        return None
    try:
        config = AutoConfig.from_pretrained(name, revision=revision, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # a model without a causal-LM class, a config not cached: no estimate
        return None
    return sum(p.numel() for p in model.parameters())


def weight_bytes(weights: str) -> int:
    """Bytes per weight of a training dtype name (Precision.weights)."""
    import torch

    return getattr(torch, _DTYPES[weights]).itemsize


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
    """Load a causal LM and its tokenizer; a folder holding a PEFT adapter loads base + adapter.

    `auto` is for inference (bf16/fp16 on GPU); training loads `precision(...).weights`.
    """
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
